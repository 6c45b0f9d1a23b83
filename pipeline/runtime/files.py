"""Scoring files: a file, glob or folder streamed through a Scorer into one scores file,
written atomically, with reading, scoring and writing overlapped."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.artifact import contract
from pipeline.artifact.drift import DriftCounter, DriftReport
from pipeline.core.atomic import atomic_output
from pipeline.core.config import DriftRules
from pipeline.core.errors import DataError, PipelineError
from pipeline.core.faults import crash_point, full_disk_point
from pipeline.core.memory import available_memory
from pipeline.data import ingest
from pipeline.data.schema import InputReport, check_columns
from pipeline.runtime.entities import grouped_prepared, prepared_alone
from pipeline.runtime.prefetch import in_order, prefetched
from pipeline.runtime.providers import cpu_cores
from pipeline.runtime.scorer import ScoreOptions, Scorer
from pipeline.runtime.steps import EntityState, StreamStates
from pipeline.runtime.writer import write_scores

# A sensor file without an entity column is one series, read whole (sorted before windowing);
# so is each entity of a fleet file. Past `series_row_cap` rows it is refused before it is read,
# not after memory has run out: the smaller of this and what the memory available holds.
WHOLE_FILE_MAX_ROWS = 10_000_000
# Peak memory per row of a series scored whole, per signal: 4 M rows of 6 signals took 2.27 GB
# (docs/reliability.md, N43), about 95 bytes per row and signal; 100 with room.
BYTES_PER_ROW_AND_SIGNAL = 100
MEMORY_SHARE = 0.5  # of the available memory one series may take: the writer and the next chunk need the rest


def series_row_cap(signals: int, available: int | None = None) -> int:
    """The most rows one series (a sensor file read whole, or one entity) may have: what half
    the available memory holds, at most WHOLE_FILE_MAX_ROWS. A 180 KB file can decode to 4 M rows
    and 2.3 GB; on a small scoring host the default cap let the out-of-memory killer end the run."""
    available = available_memory() if available is None else available
    fits = int(available * MEMORY_SHARE) // (BYTES_PER_ROW_AND_SIGNAL * max(signals, 1))
    return max(1, min(WHOLE_FILE_MAX_ROWS, fits))


# A fleet file (sensor rows with an entity column) of more than this many chunks' rows is split
# by entity and scored a group of whole entities (about one chunk's rows) at a time.
GROUPED_AFTER_CHUNKS = 4


@dataclass
class ScoreReport:
    """What `score_files` did: counts, repairs, where the output went, the top rows."""

    output: Path
    files: list[Path]
    rows: int = 0
    anomalies: int = 0
    alarms: int = 0  # onsets of anomalous episodes (the `alarm` column)
    unjudged: int = 0  # sensor steps scored on a padded window and not past its wide margin (the `judged` column)
    threshold: float = 0.0
    inputs: InputReport = field(default_factory=InputReport)
    top: list[dict] = field(default_factory=list)
    drift: DriftReport | None = None  # the batch against the training data (None: the model has no reference)
    states: dict[str, EntityState] = field(default_factory=dict)  # each entity's stream state at the end


def default_chunk_rows(scorer: Scorer) -> int:
    """Rows read per chunk: larger on a GPU, where each chunk's fixed costs (a launch, copies,
    Python's bookkeeping) are paid against a kernel that is 10× faster (bench/gpu.py)."""
    return 262144 if scorer.kernel().gpu is not None else 65536


def score_files(  # noqa: PLR0913 - keyword-only options of the public call  # long: its docstring is its manual
    scorer: Scorer,
    source: str | Path,
    output: str | Path,
    *,
    chunk_rows: int | None = None,
    keep_top: int = 10,
    options: ScoreOptions | None = None,
    on_chunk: Callable[[pl.DataFrame], object] | None = None,
    max_rows: int | None = None,
    drift_rules: DriftRules | None = None,
    stream: StreamStates | None = None,
    **fields: Any,
) -> ScoreReport:
    """Score a file, glob or folder into one file, written atomically, in the format its
    suffix names (Parquet, CSV, TSV, NDJSON, Arrow IPC), streamed chunk by chunk
    (`pipeline.runtime.writer`).

    Tabular files stream in chunks of `chunk_rows`. Sensor rows are sorted by entity and time
    before windowing: a file is read whole, or past GROUPED_AFTER_CHUNKS chunks' rows, split by
    entity and scored a group of whole entities at a time (`pipeline.runtime.entities`), with
    the same rows in the same order. An entity whose rows cannot be scored (a repeated time, a
    missing reading) is left out and named in the report's `inputs.failed`; the others are
    scored. Each output row carries the input file name. On any error the temporary file is
    removed and nothing is left behind.
    `options` (or ScoreOptions' fields as keywords) say how to score; `on_chunk` hears each
    scored chunk as it is written (a progress bar counts its rows; the scoring flow judges
    them). A file of more than `max_rows` rows is refused (default: `series_row_cap` for a
    series read whole, or for one entity of a fleet; no cap for streamed tables). The report's
    `drift` measures the batch against the model's training data (`pipeline.artifact.drift`),
    naming what passed `drift_rules` (None: the defaults). Each sensor entity continues the
    state its stream reached before its first row, in `stream` (earlier batches: the ledger's)
    or in an earlier file of this call, as if the files were one stream; the report's `states`
    hold where each entity's stream stands at the end (`pipeline.runtime.steps`)."""
    settled = scorer.resolve(options if options is not None else ScoreOptions(**fields))
    files = ingest.resolve_sources(source)
    output = Path(output)
    ingest.file_format(output)  # an output suffix we cannot write is refused before any work
    if any(output.resolve() == file.resolve() for file in files):
        raise PipelineError(
            f"the output '{output}' is one of the inputs: scoring would replace the data it reads. Choose another --output."
        )
    chunk_rows = chunk_rows or default_chunk_rows(scorer)
    for file in files:  # every file's columns are checked before anything is written
        check_columns(ingest.file_columns(file, scorer.schema.csv), scorer.schema, str(file))
    assert settled.threshold is not None
    report = ScoreReport(output=output, files=files, threshold=settled.threshold)
    drift = scorer.drift_counter()
    stream = stream if stream is not None else StreamStates()
    chunks = _scored_chunks(scorer, files, chunk_rows, settled, max_rows, scratch=output.parent, drift=drift, stream=stream)
    tally = _Tally(report, keep_top, on_chunk)
    with atomic_output(output) as temporary:
        if not write_scores(tally.written(chunks, scorer.manifest.key), temporary, output.suffix.lower()):
            raise DataError(f"there are no rows to score in '{source}'.")
    report.top = tally.top()
    report.states = stream.latest
    report.drift = drift.report(drift_rules or DriftRules()) if drift is not None else None
    return report


class _Tally:
    """Counts the scored chunks into the report and keeps the `keep` highest-scoring rows, as
    the writer takes the chunks (reading and preparing a thread ahead, scoring one chunk ahead)."""

    def __init__(self, report: ScoreReport, keep: int, on_chunk: Callable[[pl.DataFrame], object] | None) -> None:
        self.report, self.keep, self.on_chunk = report, keep, on_chunk
        self.best: list[tuple[float, int, dict]] = []
        self.tiebreak = itertools.count()  # equal scores (the same row in two files) must never compare the dicts

    def written(self, chunks: Iterator[tuple[Path, pl.DataFrame, InputReport]], model_key: str) -> Iterator[pl.DataFrame]:
        """Each chunk with its file's name and the model version on every row (an output scored
        by two models shows it: N32), counted and ranked on the way to the writer."""
        for file, scored, inputs in prefetched(chunks, depth=1):
            scored = scored.with_columns(
                pl.lit(file.name, dtype=pl.Categorical).alias(contract.SOURCE_FILE),
                pl.lit(model_key, dtype=pl.Categorical).alias(contract.MODEL_VERSION),
            )
            crash_point("score")
            self.count(scored, inputs)
            yield scored
            crash_point("write")  # the writer holds the chunk: the output is half-written
            full_disk_point("write")

    def count(self, scored: pl.DataFrame, inputs: InputReport) -> None:
        report = self.report
        report.rows += scored.height
        if self.on_chunk is not None:
            self.on_chunk(scored)
        report.anomalies += int(scored[contract.IS_ANOMALY].sum())
        report.alarms += int(scored[contract.ALARM].sum())
        if contract.JUDGED in scored.columns:
            report.unjudged += int((~scored[contract.JUDGED]).sum())
        report.inputs.add(inputs)
        best = self.best
        floor = best[0][0] if best and len(best) == self.keep else -np.inf  # only rows that can enter
        for row in scored.filter(pl.col(contract.SCORE) > floor).top_k(self.keep, by=contract.SCORE).iter_rows(named=True):
            heapq.heappush(best, (row[contract.SCORE], next(self.tiebreak), row))
            if len(best) > self.keep:
                heapq.heappop(best)

    def top(self) -> list[dict]:
        return [row for _, _, row in sorted(self.best, key=lambda item: -item[0])]


def _scored_chunks(  # noqa: PLR0913 - score_files' settings, passed on
    scorer: Scorer,
    files: list[Path],
    chunk_rows: int,
    options: ScoreOptions,
    max_rows: int | None = None,
    scratch: Path | None = None,
    drift: DriftCounter | None = None,
    stream: StreamStates | None = None,
) -> Iterator[tuple[Path, pl.DataFrame, InputReport]]:
    """(file, scored rows, input report) pieces of every file in turn. The seed advances with
    the rows scored, so sampled scores do not depend on how tables are cut into chunks. A
    file written to while it was read is refused once it is done. A fleet file's split
    parts are written under `scratch` (None: the system's temporary folder)."""
    rows = 0
    # A table's chunks are independent: two at a time keep the kernel's threads busy while one
    # chunk's last calls and columns finish. A series carries its stream state from chunk to chunk.
    workers = 1 if scorer.schema.mode == "sensor" else min(2, cpu_cores())
    for file in files:
        before = ingest.file_stamp(file)
        chunks = prefetched(_prepared_chunks(scorer, file, chunk_rows, max_rows, scratch))
        jobs = ((prepared, options.seeded(offset)) for prepared, offset in _with_offsets(chunks, rows))
        for scored, inputs in in_order(partial(_score_job, scorer, file, drift, stream), jobs, workers):
            rows += scored.height
            yield file, scored, inputs
        ingest.check_unchanged(file, before)


Prepared = tuple[np.ndarray, pl.DataFrame, InputReport]


def _score_job(
    scorer: Scorer,
    file: Path,
    drift: DriftCounter | None,
    stream: StreamStates | None,
    job: tuple[Prepared, ScoreOptions],
) -> tuple[pl.DataFrame, InputReport]:
    """One prepared chunk scored, with the seed of the rows before it (so any order gives the same scores)."""
    crash_point("read", file)
    return scorer.score_prepared(job[0], job[1], drift, stream)


def _with_offsets(chunks: Iterator[Prepared], start: int) -> Iterator[tuple[Prepared, int]]:
    """Each prepared chunk with the number of rows before it (from `start`)."""
    for prepared in chunks:
        yield prepared, start
        start += len(prepared[0])


def _prepared_chunks(
    scorer: Scorer, file: Path, chunk_rows: int, max_rows: int | None, scratch: Path | None
) -> Iterator[tuple[np.ndarray, pl.DataFrame, InputReport]]:
    """Prepared inputs of one file, piece by piece: chunks of a table; a sensor file whole,
    or (a large fleet file) a group of whole entities at a time. A file of more than
    `max_rows` rows is refused: a sensor file before it is read (a small compressed file can
    decode to gigabytes), a table as soon as its stream passes the cap."""
    columns = scorer.schema.source_columns
    if scorer.schema.mode == "sensor":
        rows = ingest.count_rows(file, scorer.schema.csv)  # Parquet and Arrow: from the footer
        if max_rows is not None:
            _refuse_over_cap(file, rows, max_rows)
        series_cap = series_row_cap(len(scorer.schema.row_features))
        if scorer.schema.entity_column and rows > GROUPED_AFTER_CHUNKS * chunk_rows:
            yield from grouped_prepared(scorer, file, chunk_rows, series_cap, scratch)
            return
        _refuse_over_cap(file, rows, series_cap)
        yield from prepared_alone(scorer, ingest.read_file(file, columns, scorer.schema.csv), str(file))
        return
    offset = 0
    for batch in ingest.iter_file_batches(file, columns, chunk_rows, scorer.schema.csv):
        if max_rows is not None:
            _refuse_over_cap(file, offset + batch.height, max_rows)
        yield scorer.prepare(batch, str(file), offset)
        offset += batch.height


def _refuse_over_cap(file: Path, rows: int, cap: int) -> None:
    if rows > cap:
        raise DataError(
            f"file '{file}' holds more than {cap:,} rows, the most one batch may decode (`max_rows`); "
            "split it into smaller batches, or raise the cap (vad score --max-rows)."
        )
