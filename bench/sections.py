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
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


Blocks = dict[str, list[tuple[str, str, str]]]  # a table's title -> its (what, measured, note) rows


def print_blocks(blocks: Blocks) -> None:
    """Each block as a table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    for title, rows in blocks.items():
        table = Table(title=title)
        for column in ("what", "measured", "note"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def markdown_blocks(blocks: Blocks) -> str:
    """Each block as a titled Markdown table, for BENCHMARKS.md."""
    return "\n\n".join(
        f"{title}:\n\n| what | measured | note |\n|---|---|---|\n" + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
        for title, rows in blocks.items()
    )
