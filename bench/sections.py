"""BENCHMARKS.md is written by several benches, each owning one section between its markers."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, name: str, section: str) -> None:
    """Put `section` between `<!-- name:start -->` and `<!-- name:end -->` in `path`, keeping
    everything else; a section not there yet is appended."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{section.strip()}\n{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
