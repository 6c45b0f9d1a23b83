"""Scores written as they are scored: a stream of scored chunks sunk by polars into one file
of the output's format, its row groups (or CSV, NDJSON and Arrow batches) encoded on every core.

The single-threaded pyarrow writer this replaces ran at a third of polars' sink on 2 cores
(bench/scaling.py, BENCHMARKS.md "Scaling with cores"), and CSV, NDJSON and Arrow outputs were
converted from a Parquet side file; the sink writes each format straight from the stream."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import polars as pl
from polars.io.plugins import register_io_source

from pipeline.data import ingest

# No compression: on 1 M rows of distinct scores (2 cores) it wrote 20 M rows/s against lz4's 14 M,
# for files a third larger than lz4's (34 against 26 MB; the pyarrow writer before, which
# compressed only the text, wrote 32 MB at 6.6 M rows/s). Scores barely compress.
COMPRESSION: Final = "uncompressed"
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def write_scores(chunks: Iterator[pl.DataFrame], path: Path, suffix: str) -> int:
    """Sink every frame of `chunks` (one schema) into `path`, in the format `suffix` names;
    returns the rows written, 0 (and nothing written) when there was no chunk. The chunks
    are pulled by polars while earlier ones are encoded, so a stream larger than memory is
    written in memory about a few chunks' size. An exception raised by the stream reaches the
    caller as it was; a file-system error of the sink is an OSError with its errno (a full
    disk stays a full disk: `pipeline.core.faults.is_transient` reads it)."""
    first = next(chunks, None)
    if first is None:
        return 0
    rows = 0

    def stream(
        with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, batch_size: int | None
    ) -> Iterator[pl.DataFrame]:
        nonlocal rows
        for frame in _chained(first, chunks):  # nothing projects or filters the sink's input
            rows += frame.height
            yield frame

    scores = register_io_source(stream, schema=first.schema)
    fmt = ingest.FORMATS[suffix]
    try:
        # A handle, not the path: when the stream raises, polars can still create a path it was
        # given after the error reached us, and the temporary reappeared after its removal (6
        # of 40 tries, bench/NOTES.md 2026-12-03); a closed handle cannot be written again.
        with open(path, "wb") as sink:
            if fmt == "parquet":
                scores.sink_parquet(sink, compression=COMPRESSION)
            elif fmt == "csv":
                scores.sink_csv(sink, separator="\t" if suffix == ".tsv" else ",")
            elif fmt == "ndjson":
                scores.sink_ndjson(sink)
            else:
                scores.sink_ipc(sink, compression=COMPRESSION)
    except pl.exceptions.PolarsError as error:
        code = _OS_ERROR.search(str(error))
        if code is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), str(path)) from error
    return rows


def _chained(first: pl.DataFrame, rest: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    yield first
    yield from rest
