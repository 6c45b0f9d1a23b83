"""Sensor files scored a group of whole entities at a time, so that memory holds one group and
never the file, and so that an entity whose rows cannot be scored fails alone.

Windows run within one entity's series, so a series must be read whole but a fleet need not
be: a file too large to read at once is streamed once and split into a Parquet file per group
of entities (`split_groups`). Groups hold consecutive entities in
sorted order, so the groups' scores, one after the other, are the rows the whole file gives."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.core.atomic import scratch_folder
from pipeline.core.errors import DataError
from pipeline.data import ingest
from pipeline.data.schema import FeatureSchema, InputReport, RowNumbers, row_numbers
from pipeline.runtime.scorer import Scorer

Prepared = tuple[np.ndarray, pl.DataFrame, InputReport]
MISSING_ENTITY = "(missing)"  # how a report names the rows whose entity is empty
ROW, GROUP = "__row", "__group"  # columns of the split files: the row's number in its file, its group
FLUSH_BATCHES = 16  # batches read before the rows waiting per group are appended to the groups' files


@dataclass(frozen=True)
class EntityGroup:
    """Consecutive entities (in sorted order, a missing entity last) and their rows in the file."""

    entities: list  # the entity column's values, as JSON-able Python values
    rows: int


def plan_groups(file: Path, schema: FeatureSchema, budget_rows: int, entity_cap: int) -> list[EntityGroup]:
    """The file's entities packed, in sorted order, into groups of at most `budget_rows` rows
    (an entity with more rows forms its own group), counted by one streaming pass. An entity
    of more than `entity_cap` rows (read whole, it would not fit) is refused."""
    entity = _entity(schema)
    counts = ingest.scan_file(file, schema.csv).group_by(entity).len().sort(entity, nulls_last=True)
    counted = ingest.guard(file, lambda: counts.collect(engine="streaming"))
    groups: list[EntityGroup] = []
    values: list = []
    rows = 0
    for value, count in counted.iter_rows():
        if count > entity_cap:
            raise DataError(
                f"entity {value!r} has {count:,} rows in file '{file}', more than the {entity_cap:,} one "
                "series may hold (it is read whole to be windowed); split its readings over several batches."
            )
        if values and rows + count > budget_rows:
            groups.append(EntityGroup(values, rows))
            values, rows = [], 0
        values.append(value)
        rows += count
    if values:
        groups.append(EntityGroup(values, rows))
    return groups


def split_groups(file: Path, schema: FeatureSchema, groups: list[EntityGroup], folder: Path, batch_rows: int) -> list[Path]:
    """Write each group's rows, with their row numbers in the file, to its own folder of
    Parquet files under `folder`, in one streaming pass; returns the folders, in group order.

    The file is read in batches of `batch_rows`; each batch's rows are held per group until
    FLUSH_BATCHES batches' rows are waiting, then written as one more numbered file in each
    group's folder, so memory holds a few batches whatever the file's size. (polars' own
    partitioned sink, tried first, held most of a 10 M-row file: 1.4-2.0 GB; an appending
    Parquet writer would need pyarrow, which the scoring install does without.)"""
    entity = _entity(schema)
    index = {value: i for i, group in enumerate(groups) for value in group.entities if value is not None}
    missing = next((i for i, group in enumerate(groups) if None in group.entities), len(groups))
    group_of = (
        pl.when(pl.col(entity).is_null())
        .then(pl.lit(missing, pl.UInt32))
        .otherwise(pl.col(entity).replace_strict(index, return_dtype=pl.UInt32))
        .alias(GROUP)
    )
    paths = [folder / f"group-{i:05d}" for i in range(len(groups))]
    for path in paths:
        path.mkdir()
    waiting: dict[int, list[pl.DataFrame]] = defaultdict(list)
    flushes = 0

    def flush() -> None:
        for group, frames in waiting.items():
            pl.concat(frames).write_parquet(paths[group] / f"{flushes:06d}.parquet", compression="lz4")
        waiting.clear()

    offset = held = 0
    for batch in ingest.iter_file_batches(file, schema.source_columns, batch_rows, schema.csv):
        numbered = batch.with_columns(pl.int_range(offset, offset + batch.height, dtype=pl.Int64).alias(ROW), group_of)
        for (group,), part in numbered.partition_by(GROUP, as_dict=True, include_key=False).items():
            waiting[group].append(part)
        offset, held = offset + batch.height, held + batch.height
        if held >= FLUSH_BATCHES * batch_rows:
            flush()
            flushes, held = flushes + 1, 0
    flush()
    return paths


def read_group(part: Path) -> tuple[pl.DataFrame, np.ndarray]:
    """One group's rows in their file order (its files in the order they were written), and
    each row's 0-based number in the file."""
    frame = pl.concat([pl.read_parquet(chunk) for chunk in sorted(part.glob("*.parquet"))])
    return frame.drop(ROW), frame[ROW].to_numpy()


def read_entities(file: Path, schema: FeatureSchema, entities: list) -> tuple[pl.DataFrame, np.ndarray]:
    """The rows of `entities` (None: rows without an entity), in file order, read by one
    streaming pass, and each row's 0-based number in the file: one Dask partition's input."""
    entity = pl.col(_entity(schema))
    known = [value for value in entities if value is not None]
    wanted = entity.is_in(pl.Series(known, dtype=ingest.file_columns(file, schema.csv)[_entity(schema)]))
    if None in entities:
        wanted = wanted | entity.is_null()
    lazy = ingest.scan_file(file, schema.csv).select(schema.source_columns).with_row_index(ROW).filter(wanted)
    frame = ingest.guard(file, lambda: lazy.collect(engine="streaming"))
    return frame.drop(ROW), frame[ROW].cast(pl.Int64).to_numpy()


def grouped_prepared(
    scorer: Scorer, file: Path, budget_rows: int, entity_cap: int, scratch: Path | None = None
) -> Iterator[Prepared]:
    """A large sensor file prepared one group of entities at a time (the split files live in
    a temporary folder under `scratch`, removed when the iteration ends, however it ends).
    Entities that fail are named in the next piece's report (an empty piece at the end, when
    the last groups failed); if every entity fails, the first error is raised."""
    planned = ingest.file_stamp(file)  # a file re-delivered between the plan and the split (N27)
    groups = plan_groups(file, scorer.schema, budget_rows, entity_cap)
    first_error: DataError | None = None
    pending: dict[str, str] = {}
    scored_any = False
    with scratch_folder(scratch, ".vad-entities-") as folder:
        try:
            parts = split_groups(file, scorer.schema, groups, Path(folder), budget_rows)
        except pl.exceptions.InvalidOperationError as unplanned:  # an entity value the plan never counted
            raise DataError(
                f"file '{file}' changed while it was being read (an entity appeared that its first "
                "pass did not count); score it again once it is complete."
            ) from unplanned
        ingest.check_unchanged(file, planned)
        for part in parts:
            frame, rows = read_group(part)
            pieces, failed, error = entity_pieces(scorer, frame, str(file), rows)
            first_error, scored_any = first_error or error, scored_any or bool(pieces)
            pending.update(failed)
            if pieces:
                pieces[0][2].failed.update(pending)
                pending = {}
                yield from pieces
        if not scored_any and first_error is not None:
            raise first_error
        if pending:
            yield empty_piece(scorer, frame, str(file), pending)


def prepared_alone(scorer: Scorer, frame: pl.DataFrame, file: str | None, rows: RowNumbers = 0) -> Iterator[Prepared]:
    """`scorer.prepare` for a frame of sensor rows, each entity that cannot be scored left out
    and named with its error in the first piece's report (`InputReport.failed`). If every
    entity fails, the first error is raised: the batch itself is wrong."""
    pieces, failed, error = entity_pieces(scorer, frame, file, rows)
    if not pieces:
        assert error is not None
        raise error
    pieces[0][2].failed.update(failed)
    yield from pieces


def entity_pieces(
    scorer: Scorer, frame: pl.DataFrame, file: str | None, rows: RowNumbers = 0
) -> tuple[list[Prepared], dict[str, str], DataError | None]:
    """The frame prepared whole; where that fails, each entity prepared alone (in the order
    the whole frame sorts into): the pieces that could be, the entities that could not with
    their errors, and the first error. A series without an entity column fails whole."""
    entity = scorer.schema.entity_column
    try:
        return [scorer.prepare(frame, file, rows)], {}, None
    except DataError:
        if entity is None:
            raise
    numbered = frame.with_columns(pl.Series(ROW, row_numbers(rows, frame.height)))
    parts = {key[0]: part for key, part in numbered.partition_by(entity, as_dict=True, maintain_order=True).items()}
    pieces: list[Prepared] = []
    failed: dict[str, str] = {}
    first_error: DataError | None = None
    for value in sorted(parts, key=lambda v: (v is None, v)):
        part = parts[value]
        try:
            pieces.append(scorer.prepare(part.drop(ROW), file, part[ROW].to_numpy()))
        except DataError as error:
            failed[MISSING_ENTITY if value is None else str(value)] = str(error)
            first_error = first_error or error
    return pieces, failed, first_error


def empty_piece(scorer: Scorer, frame: pl.DataFrame, file: str | None, failed: dict[str, str]) -> Prepared:
    """No rows, and a report naming `failed`: how failures reach a report when no scored rows
    follow them."""
    matrix, keys, report = scorer.prepare(frame.head(0), file)
    report.failed.update(failed)
    return matrix, keys, report


def _entity(schema: FeatureSchema) -> str:
    if schema.entity_column is None:
        raise DataError("entity groups need an entity column; this model's series has none.")
    return schema.entity_column
