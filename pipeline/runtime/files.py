"""Scoring files: a file, glob or folder streamed through a Scorer into one Parquet file,
written atomically, with reading, scoring and writing overlapped."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

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
from pipeline.runtime.prefetch import prefetched
from pipeline.runtime.scorer import Held, ScoreOptions, Scorer

# A sensor file without an entity column is one series, read whole (sorted before windowing);
# so is each entity of a fleet file. Past `series_row_cap` rows it is refused before it is read,
# not after memory has run out: the smaller of this and what the memory available holds.
WHOLE_FILE_MAX_ROWS = 10_000_000
# Peak memory per row of a series scored whole, per signal: 4 M rows of 6 signals took 2.27 GB
# (../shared/reviews/reliability.md, N43), about 95 bytes per row and signal; 100 with room.
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
    threshold: float = 0.0
    inputs: InputReport = field(default_factory=InputReport)
    top: list[dict] = field(default_factory=list)
    drift: DriftReport | None = None  # the batch against the training data (None: the model has no reference)
    alarm_state: dict[str, Held] = field(default_factory=dict)  # each entity's alarm state at the end (Scorer.alarms)


def default_chunk_rows(scorer: Scorer) -> int:
    """Rows read per chunk: larger on a GPU, where each chunk's fixed costs (a launch, copies,
    Python's bookkeeping) are paid against a kernel that is 10× faster (bench/gpu.py)."""
    return 262144 if scorer.kernel().gpu is not None else 65536


def score_files(scorer: Scorer, source: str | Path, output: str | Path, *, chunk_rows: int | None = None,
                keep_top: int = 10, options: ScoreOptions | None = None,
                on_chunk: Callable[[int], object] | None = None, max_rows: int | None = None,
                drift_rules: DriftRules | None = None, alarm_state: dict[str, Held] | None = None,
                **fields: Any) -> ScoreReport:
    """Score a file, glob or folder into one file, written atomically, in the format its
    suffix names (Parquet, CSV, TSV, NDJSON, Arrow IPC; Parquet is streamed, the others are
    converted from it).

    Tabular files stream in chunks of `chunk_rows`. Sensor rows are sorted by entity and time
    before windowing: a file is read whole, or past GROUPED_AFTER_CHUNKS chunks' rows, split by
    entity and scored a group of whole entities at a time (`pipeline.runtime.entities`), with
    the same rows in the same order. An entity whose rows cannot be scored (a repeated time, a
    missing reading) is left out and named in the report's `inputs.failed`; the others are
    scored. Each output row carries the input file name. On any error the temporary file is
    removed and nothing is left behind.
    `options` (or ScoreOptions' fields as keywords) say how to score; `on_chunk` hears the
    rows of each chunk as it is scored (a progress bar). A file of more than `max_rows` rows
    is refused (default: `series_row_cap` for a series read whole, or for one entity of a
    fleet; no cap for streamed tables). The report's `drift` measures the batch against the
    model's training data (`pipeline.artifact.drift`), naming what passed `drift_rules`
    (None: the defaults). `alarm_state` (each entity's last alarm and flagged row, from earlier
    batches: Scorer.alarms) carries the alarm rule across batches; the report's holds it at the end."""
    settled = scorer.resolve(options if options is not None else ScoreOptions(**fields))
    files = ingest.resolve_sources(source)
    output = Path(output)
    fmt = ingest.file_format(output)  # an output suffix we cannot write is refused before any work
    if any(output.resolve() == file.resolve() for file in files):
        raise PipelineError(f"the output '{output}' is one of the inputs: scoring would replace the data it reads. "
                            "Choose another --output.")
    chunk_rows = chunk_rows or default_chunk_rows(scorer)
    for file in files:  # every file's columns are checked before anything is written
        check_columns(ingest.file_columns(file), scorer.schema, str(file))
    assert settled.threshold is not None
    report = ScoreReport(output=output, files=files, threshold=settled.threshold, alarm_state=dict(alarm_state or {}))
    drift = scorer.drift_counter()
    model_key = scorer.manifest.key  # on every row: an output scored by two models shows it (N32)
    best: list[tuple[float, int, dict]] = []
    tiebreak = itertools.count()  # equal scores (the same row in two files) must never compare the dicts
    writer: pq.ParquetWriter | None = None
    writing = ThreadPoolExecutor(1, thread_name_prefix="vad-write")  # writes chunk n while n + 1 is scored
    pending = None
    with atomic_output(output) as temporary:
        streamed = temporary if fmt == "parquet" else temporary.with_name(temporary.name + ".parquet")
        try:
            # Three stages overlap: reading and preparing (a thread, up to two chunks ahead),
            # scoring (a thread, one chunk ahead of this one) and writing (a thread, one behind).
            chunks = _scored_chunks(scorer, files, chunk_rows, settled, max_rows, scratch=output.parent, drift=drift,
                                    alarm_state=report.alarm_state)
            for file, scored, inputs in prefetched(chunks, depth=1):
                scored = scored.with_columns(pl.lit(file.name, dtype=pl.Enum([file.name])).alias(contract.SOURCE_FILE),
                                             pl.lit(model_key, dtype=pl.Enum([model_key])).alias(contract.MODEL_VERSION))
                crash_point("score")
                table = scored.to_arrow()
                if writer is None:
                    writer = open_scores_writer(streamed, table.schema, settled.top_k)
                if pending is not None:
                    pending.result()
                    crash_point("write")
                    full_disk_point("write")
                pending = writing.submit(writer.write_table, table)
                report.rows += scored.height
                if on_chunk is not None:
                    on_chunk(scored.height)
                report.anomalies += int(scored[contract.IS_ANOMALY].sum())
                report.alarms += int(scored[contract.ALARM].sum())
                report.inputs.add(inputs)
                floor = best[0][0] if best and len(best) == keep_top else -np.inf  # only rows that can enter
                entering = scored.filter(pl.col(contract.SCORE) > floor).top_k(keep_top, by=contract.SCORE)
                for row in entering.iter_rows(named=True):
                    heapq.heappush(best, (row[contract.SCORE], next(tiebreak), row))
                    if len(best) > keep_top:
                        heapq.heappop(best)
            if pending is not None:
                pending.result()
                crash_point("write")
                full_disk_point("write")
            if writer is None:
                raise DataError(f"there are no rows to score in '{source}'.")
        except BaseException:
            if pending is not None:
                pending.exception()  # let a write in flight finish before the file is closed
            if streamed != temporary:  # atomic_output removes its own temporary, not this side file
                streamed.unlink(missing_ok=True)
            raise
        finally:
            if writer is not None:
                writer.close()
            writing.shutdown()
        if streamed != temporary:
            try:
                convert_scores(streamed, temporary, output.suffix.lower())
            finally:
                streamed.unlink(missing_ok=True)
    report.top = [row for _, _, row in sorted(best, key=lambda item: -item[0])]
    report.drift = drift.report(drift_rules or DriftRules()) if drift is not None else None
    return report


def convert_scores(parquet: Path, target: Path, suffix: str) -> None:
    """The streamed Parquet scores rewritten as CSV, TSV, NDJSON or Arrow IPC (by `suffix`),
    streamed again (polars' sinks), so a large batch is never held whole."""
    scores = pl.scan_parquet(parquet)
    fmt = ingest.FORMATS[suffix]
    if fmt == "csv":
        scores.sink_csv(target, separator="\t" if suffix == ".tsv" else ",")
    elif fmt == "ndjson":
        scores.sink_ndjson(target)
    else:
        scores.sink_ipc(target)


def open_scores_writer(path: Path, schema: pa.Schema, top_k: int) -> pq.ParquetWriter:
    """The scores file's writer. store_schema=False: Enum columns are written as dictionary-
    encoded strings and read back as plain strings. Measured on 1 M rows: lz4 wrote 3× faster
    than zstd; scores and shares barely compress (22 → 19 MB), and leaving them uncompressed
    and without dictionaries cut the write by a quarter. Column statistics cost a third of
    the write; the ranked explanations are never filtered on, so only the other columns get them."""
    texts = [f.name for f in schema if not pa.types.is_floating(f.type)]
    compression = {f.name: "lz4" if f.name in texts else "none" for f in schema}
    ranked = {name for i in range(top_k) for name in (contract.top_feature(i + 1), contract.top_share(i + 1))}
    return pq.ParquetWriter(path, schema, compression=compression, store_schema=False, use_dictionary=texts,
                            write_statistics=[n for n in schema.names if n not in ranked])


def _scored_chunks(scorer: Scorer, files: list[Path], chunk_rows: int, options: ScoreOptions,
                   max_rows: int | None = None, scratch: Path | None = None, drift: DriftCounter | None = None,
                   alarm_state: dict[str, Held] | None = None) -> Iterator[tuple[Path, pl.DataFrame, InputReport]]:
    """(file, scored rows, input report) pieces of every file in turn. The seed advances with
    the rows scored, so sampled scores do not depend on how tables are cut into chunks. A
    file written to while it was read is refused once it is done. A fleet file's split
    parts are written under `scratch` (None: the system's temporary folder)."""
    rows = 0
    for file in files:
        before = ingest.file_stamp(file)
        for prepared in prefetched(_prepared_chunks(scorer, file, chunk_rows, max_rows, scratch)):
            crash_point("read", file)
            scored, inputs = scorer.score_prepared(prepared, options.seeded(rows), drift, alarm_state)
            rows += scored.height
            yield file, scored, inputs
        ingest.check_unchanged(file, before)


def _prepared_chunks(scorer: Scorer, file: Path, chunk_rows: int, max_rows: int | None, scratch: Path | None
                     ) -> Iterator[tuple[np.ndarray, pl.DataFrame, InputReport]]:
    """Prepared inputs of one file, piece by piece: chunks of a table; a sensor file whole,
    or (a large fleet file) a group of whole entities at a time. A file of more than
    `max_rows` rows is refused: a sensor file before it is read (a small compressed file can
    decode to gigabytes), a table as soon as its stream passes the cap."""
    columns = scorer.schema.source_columns
    if scorer.schema.mode == "sensor":
        rows = ingest.count_rows(file)  # Parquet and Arrow: from the footer
        if max_rows is not None:
            _refuse_over_cap(file, rows, max_rows)
        series_cap = series_row_cap(len(scorer.schema.row_features))
        if scorer.schema.entity_column and rows > GROUPED_AFTER_CHUNKS * chunk_rows:
            yield from grouped_prepared(scorer, file, chunk_rows, series_cap, scratch)
            return
        _refuse_over_cap(file, rows, series_cap)
        yield from prepared_alone(scorer, ingest.read_file(file, columns), str(file))
        return
    offset = 0
    for batch in ingest.iter_file_batches(file, columns, chunk_rows):
        if max_rows is not None:
            _refuse_over_cap(file, offset + batch.height, max_rows)
        yield scorer.prepare(batch, str(file), offset)
        offset += batch.height


def _refuse_over_cap(file: Path, rows: int, cap: int) -> None:
    if rows > cap:
        raise DataError(f"file '{file}' holds more than {cap:,} rows, the most one batch may decode (`max_rows`); "
                        "split it into smaller batches, or raise the cap (vad score --max-rows).")
