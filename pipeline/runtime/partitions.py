"""Scoring one large input as independent partitions (files, Parquet row groups, or a fleet
file's groups of whole entities), so that a cluster can score them side by side; the combined
result equals `score_files`.

A partition is a plain, JSON-able value (file, first row, row count, entities), scored into its
own Parquet part; `combine_parts` then streams the parts into one file, in partition order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.artifact import contract
from pipeline.core.atomic import atomic_output
from pipeline.core.errors import DataError, PipelineError
from pipeline.data import ingest
from pipeline.data.schema import InputReport, check_columns
from pipeline.runtime.entities import empty_piece, entity_pieces, plan_groups, read_entities
from pipeline.runtime.files import WHOLE_FILE_MAX_ROWS, score_files
from pipeline.runtime.scorer import ScoreOptions, Scorer


@dataclass(frozen=True)
class Partition:
    index: int
    file: str
    first_row: int  # within the file
    rows: int | None  # None: the whole file
    entities: list | None = None  # a fleet file's entities (values of its entity column), scored whole
    identity: list[int] | None = None  # the file as planned (ingest.file_identity): a changed file is refused


def plan_partitions(source: str | Path, scorer: Scorer, rows_per_partition: int = 262_144) -> list[Partition]:
    """Cut the input into partitions of about `rows_per_partition` rows: Parquet files along
    their row groups, other files whole. Windows need each series whole: a sensor file with
    an entity column is cut into groups of whole entities (in sorted order, as `score_files`
    writes them), one without stays whole."""
    import pyarrow.parquet as pq  # the `flows` extra's: the scoring install does without its 170 MB

    partitions: list[Partition] = []
    for file in ingest.resolve_sources(source):
        identity = ingest.file_identity(file)  # before reading: a change while planning shows up later
        check_columns(ingest.file_columns(file, scorer.schema.csv), scorer.schema, str(file))
        if scorer.schema.mode == "sensor" and scorer.schema.entity_column:
            for entities in plan_groups(file, scorer.schema, rows_per_partition, WHOLE_FILE_MAX_ROWS):
                partitions.append(Partition(len(partitions), str(file), 0, entities.rows, entities.entities, identity))
            continue
        if ingest.file_format(file) != "parquet" or scorer.schema.mode == "sensor":
            partitions.append(Partition(len(partitions), str(file), 0, None, identity=identity))
            continue
        metadata = pq.ParquetFile(file).metadata
        start, size = 0, 0
        for group in range(metadata.num_row_groups):
            size += metadata.row_group(group).num_rows
            if size >= rows_per_partition or group == metadata.num_row_groups - 1:
                partitions.append(Partition(len(partitions), str(file), start, size, identity=identity))
                start, size = start + size, 0
    return partitions


def check_planned(partition: Partition) -> None:
    """Refuse to score a partition of a file that changed since it was planned: its parts
    would mix old and new rows (N29), or miss a machine that vanished (N30)."""
    if partition.identity is not None and ingest.file_identity(Path(partition.file)) != partition.identity:
        raise DataError(
            f"file '{partition.file}' changed after its partitions were planned (re-delivered?): "
            "its parts would mix old and new rows. Score it again."
        )


def score_partition(scorer: Scorer, partition: Partition, parts_dir: str | Path) -> tuple[str, InputReport]:
    """Score one partition into `parts_dir/part-<index>.parquet` (atomically); returns its
    path and its input report (repairs; the entities left out, with their errors)."""
    output = Path(parts_dir) / f"part-{partition.index:05d}.parquet"
    file = Path(partition.file)
    check_planned(partition)
    if partition.rows is None:
        return str(output), score_files(scorer, file, output).inputs
    if partition.entities is not None:  # entities that fail are left out and reported; the flow
        frame, rows = read_entities(file, scorer.schema, partition.entities)  # refuses a run where all did
        prepared, failed, _ = entity_pieces(scorer, frame, str(file), rows)
        options, report = scorer.resolve(ScoreOptions()), InputReport()
        pieces = []
        for piece in prepared or [empty_piece(scorer, frame, str(file), {})]:
            scored, inputs = scorer.score_prepared(piece, options)
            pieces.append(scored)
            report.add(inputs)
        report.failed.update(failed)
        scored = pl.concat(pieces)
    else:
        frame = ingest.read_file_slice(
            file, scorer.schema.source_columns, partition.first_row, partition.rows, scorer.schema.csv
        )
        scored, report = scorer.score_with_report(frame, file=str(file), row_offset=partition.first_row)
    check_planned(partition)  # and after: a change while it was read
    if partition.entities is not None:  # every planned entity scored or named as failed, none dropped
        seen = set(scored[str(scorer.schema.entity_column)].cast(pl.String).unique().to_list()) | set(report.failed)
        for entity in partition.entities:
            if str(entity) not in seen:
                report.failed[str(entity)] = "planned, but not in the file when its partition was read"
    ingest.write_frame(
        scored.with_columns(
            pl.lit(file.name).alias(contract.SOURCE_FILE), pl.lit(scorer.manifest.key).alias(contract.MODEL_VERSION)
        ),
        output,
    )
    return str(output), report


def combine_parts(parts: list[str], output: str | Path) -> Path:
    """Stream the parts, in order, into one Parquet file (written atomically). Parts scored by
    different model versions are refused: a version folder replaced while the workers loaded it
    gave one output from two models, with nothing to tell (N32)."""
    if not parts:
        raise PipelineError("there are no scored partitions to combine.")
    combined = pl.concat([pl.scan_parquet(part) for part in parts], how="vertical_relaxed")  # in partition order
    models = sorted(combined.select(pl.col(contract.MODEL_VERSION).unique()).collect()[contract.MODEL_VERSION].to_list())
    if len(models) > 1:
        raise PipelineError(
            f"the partitions were scored by {len(models)} model versions ({', '.join(models)}): the "
            "model folder changed during the run. Run it again; nothing was written."
        )
    output = Path(output)
    with atomic_output(output) as temporary:
        combined.sink_parquet(temporary, compression="zstd")  # streamed: memory holds a part's batches, not the output
    return output
