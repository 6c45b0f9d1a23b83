"""The streaming rate at two file sizes, in fresh processes (issue 19: "the 20 M-row stream
ran at 0.51 M rows/s against 1.1-1.3 M for an 8 M-row file").

    python bench/stream_sizes.py                      # 8 M and 20 M rows × 32 features

The model and the files are bench/speed.py's (the 1-member reference model, zstd Parquet in
row groups of 131,072); each file is scored by `score_files` in a fresh interpreter whose
peak resident memory is read from /proc. Prints a table; writes nothing."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from speed import peak_rss_of, synthetic_rows, train_model, write_big_file  # noqa: E402


def main(sizes: list[int] = typer.Option([8_000_000, 20_000_000], "--rows", help="File sizes in rows.")) -> None:
    tmp = Path(tempfile.mkdtemp(dir=ROOT / "bench"))
    table = Table(title="Streaming a file through score_files, fresh process each")
    for column in ("rows", "rate", "peak RSS", "rate against the first size"):
        table.add_column(column)
    try:
        folder, _ = train_model(synthetic_rows(50_000, 32), tmp / "models", members=1, epochs=2)
        first = None
        for rows in sizes:
            big = tmp / f"rows-{rows}.parquet"
            write_big_file(big, rows, 32)
            os.sync()  # the file's dirty pages go to disk now, not while it is scored
            code = (
                f"from pipeline.runtime import Scorer, score_files; "
                f"score_files(Scorer.load({str(folder)!r}), {str(big)!r}, {str(tmp / 'scores.parquet')!r})"
            )
            peak_mb, seconds = peak_rss_of(code)
            rate = rows / seconds
            first = first or rate
            table.add_row(f"{rows:,}", f"{rate / 1e6:.2f} M rows/s", f"{peak_mb:,.0f} MB", f"{rate / first:.2f}")
            big.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
