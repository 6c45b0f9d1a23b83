"""How much memory this process may still take: the host's available memory, or less where a
container's memory limit (cgroup v2 or v1) says so. Caps derived from it turn an out-of-memory
kill, which takes the whole run down, into one batch refused with its reason."""

from __future__ import annotations

from pathlib import Path

import psutil

# (limit, usage) files: cgroup v2, then v1. A limit of "max" (v2) or a huge number (v1) is none.
_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def available_memory() -> int:
    """Bytes this process can still allocate before the host or its container runs out."""
    available = psutil.virtual_memory().available
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit, usage = int(Path(limit_file).read_text()), int(Path(usage_file).read_text())
        except (OSError, ValueError):  # no such controller here, or no limit ("max")
            continue
        available = min(available, max(limit - usage, 0))
    return available
