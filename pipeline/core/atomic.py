"""Every output file appears whole or not at all, and no writer can be steered elsewhere.

One temporary file per write, created exclusively (O_EXCL, by `tempfile.mkstemp`) under an
unpredictable name beside the output: a symbolic link planted at a known `.name.tmp` is never
followed, and two writers never share a temporary. On success the file and then its folder
are flushed to disk before and after the rename, so a ledger that records the output as
written (after this returns) never points at a file a power cut could still take back."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.core.faults import pid_alive

_UMASK = os.umask(0o022)  # read once, at import: the mode an ordinary file would get
os.umask(_UMASK)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path to write `path`'s content to; rename it onto `path` when the
    block ends cleanly, remove it when the block raises. Dead writers' temporaries go first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp's 0600 would make outputs private
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(path.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# `.<output name>.tmp-<pid>-<mkstemp's random characters>`: what `atomic_output` names its temporaries.
_TEMPORARY = re.compile(r"^\..+\.tmp-(?P<pid>\d+)-[a-z0-9_]+$")


def remove_dead_temporaries(path: Path) -> None:
    """Delete the temporaries killed writers left beside `path`, whichever output they were
    writing (their pid is gone; a live writer's stay): R30 found one left until the same output
    name was written again, which may be never."""
    for leftover in path.parent.glob(".*.tmp-*"):
        match = _TEMPORARY.match(leftover.name)
        if match and leftover.is_file() and not pid_alive(int(match["pid"])):
            leftover.unlink(missing_ok=True)


def scratch_folder(parent: Path | None, prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder named `<prefix><pid>-…` under `parent` (None: the system's), removed
    when its block ends; the folders of killed processes (their pid gone) go first, or each
    crash would leave its copy behind for ever."""
    parent = Path(parent or tempfile.gettempdir())
    for leftover in _dead(parent, prefix):
        shutil.rmtree(leftover, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-", dir=parent)


def _dead(parent: Path, prefix: str) -> list[Path]:
    """Entries of `parent` named `<prefix><pid>-…` whose process is gone."""
    found = []
    for leftover in parent.glob(f"{prefix}*"):
        pid = leftover.name.removeprefix(prefix).split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            found.append(leftover)
    return found


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
