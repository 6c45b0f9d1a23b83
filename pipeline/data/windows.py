"""Sensor rows into windows: each entity's series sorted by time (repeated times merged or
refused, readings taken onto a fixed step), cut into spans at gaps, and the sliding windows
over each span that the scorer and training read. The schema (`pipeline.data.schema`) says
which columns are the entity and the time, the window, and the policies."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.core.config import WindowSpec
from pipeline.core.errors import DataError, SchemaError, where
from pipeline.data.schema import FeatureSchema, RowNumbers, file_row


def sort_for_windows(
    frame: pl.DataFrame, schema: FeatureSchema, file: str | None = None, row_offset: RowNumbers = 0
) -> tuple[pl.DataFrame, bool]:
    """Order rows by entity then time, so each entity's series is contiguous and causal;
    returns the frame and whether it had to be re-ordered (a reported repair). A missing key is
    an error naming its row. A time repeated within an entity is handled by the schema's
    `duplicates` policy: by default an error naming both rows (which reading is right cannot
    be guessed), else merged into one row (the caller counts them: rows in − rows out)."""
    keys = [k for k in (schema.entity_column, schema.time_column) if k]
    if not keys:
        return frame, False
    for key in keys:
        values = frame[key]
        missing = values.is_null()
        if values.dtype.is_float():  # NaN sorts last and inf first: the row would be scored out of place
            missing = missing | ~values.is_finite()
        if missing.any():
            row = int(missing.arg_true()[0])
            what = "a missing value" if values[row] is None else f"a value that is not a time ({values[row]})"
            raise SchemaError(f"key column '{key}' has {what}{where(file, key, file_row(row_offset, row))}.")
    ordered = frame.with_row_index("__row").sort(keys, maintain_order=True)
    resorted = not ordered["__row"].is_sorted()
    if schema.resample is not None and schema.time_column:
        return resampled(ordered, schema, file), resorted
    repeated = ordered.select(keys).is_duplicated()
    if schema.time_column and repeated.any():
        if schema.duplicates != "error":
            return _merge_repeats(ordered, keys, schema), resorted
        rows = ordered.filter(repeated)
        first, second = rows.row(0, named=True), rows.row(1, named=True)
        entity = f" for entity {first[schema.entity_column]!r}" if schema.entity_column else ""
        zone = clocks_going_back(rows[schema.time_column]) if schema.time_zone is None else None
        fix = (
            f"every repeat falls in the hour that repeats when clocks go back (daylight saving, as in {zone}): "
            f"if the times are local wall-clock times, train with --time-zone {zone} (`time_zone`), which keeps "
            "both hours' readings"
            if zone
            else "drop the duplicate readings, or train with --duplicates last or mean (`duplicates`) to merge them"
        )
        raise SchemaError(
            f"time {first[schema.time_column]} appears twice{entity} (rows {file_row(row_offset, first['__row'])} and "
            f"{file_row(row_offset, second['__row'])}){where(file, schema.time_column)}; {fix}."
        )
    return ordered.drop("__row"), resorted


# Zones whose clocks go back: a repeat inside their repeated hour is likely local time, not a resend.
DAYLIGHT_ZONES = ("Europe/Berlin", "Europe/London", "America/New_York", "America/Chicago", "America/Los_Angeles")


def clocks_going_back(times: pl.Series) -> str | None:
    """A zone in whose repeated hour (clocks going back) every one of these times falls, if any."""
    if not isinstance(times.dtype, pl.Datetime) or times.dtype.time_zone is not None:
        return None
    for zone in DAYLIGHT_ZONES:  # ambiguous: the two readings of the hour differ; a skipped hour is neither
        earlier = times.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
        later = times.dt.replace_time_zone(zone, ambiguous="latest", non_existent="null")
        if (earlier != later).fill_null(False).all():
            return zone
    return None


def resampled(ordered: pl.DataFrame, schema: FeatureSchema, file: str | None = None) -> pl.DataFrame:
    """Each entity's readings taken onto the schema's fixed step: one row per step that holds
    a reading, at the step's start, numeric features averaged (a missing reading left out of
    the mean), everything else from the last reading (the caller counts the rows merged)."""
    assert schema.time_column is not None and schema.resample is not None
    if not ordered.schema[schema.time_column].is_temporal():
        raise SchemaError(
            f"resampling needs a datetime time column; '{schema.time_column}' holds "
            f"{ordered.schema[schema.time_column]}{where(file)}."
        )
    numeric = {c.name for c in schema.columns if c.kind != "categorical"}
    others = [c for c in ordered.columns if c not in (schema.time_column, schema.entity_column, "__row")]
    steps = ordered.group_by_dynamic(
        schema.time_column,
        every=schema.resample,
        label="left",
        closed="left",
        group_by=schema.entity_column,
        start_by="window",
    ).agg([pl.col(c).mean() if c in numeric and ordered[c].dtype.is_numeric() else pl.col(c).last() for c in others])
    return steps.select([c for c in ordered.columns if c != "__row"])


def _merge_repeats(ordered: pl.DataFrame, keys: list[str], schema: FeatureSchema) -> pl.DataFrame:
    """One row per (entity, time): the last reading in input order, or (`mean`) the numeric
    features averaged and everything else from the last reading. `ordered` is sorted stably,
    so within a key its rows keep their input order."""
    if schema.duplicates == "last":
        return ordered.unique(keys, keep="last", maintain_order=True).drop("__row")
    numeric = {c.name for c in schema.columns if c.kind != "categorical"}
    return (
        ordered.group_by(keys, maintain_order=True)
        .agg(
            [
                pl.col(c).mean() if c in numeric and ordered[c].dtype.is_numeric() else pl.col(c).last()
                for c in ordered.columns
                if c not in keys and c != "__row"
            ]
        )
        .select([c for c in ordered.columns if c != "__row"])
    )


def entity_bounds(frame: pl.DataFrame, schema: FeatureSchema) -> list[tuple[int, int]]:
    """Start and end row of each entity in a sorted frame (one span when there is no entity)."""
    if not schema.entity_column:
        return [(0, frame.height)]
    starts = frame[schema.entity_column].rle_id().to_numpy()
    change = np.flatnonzero(np.diff(starts)) + 1
    edges = np.concatenate([[0], change, [frame.height]])
    return list(pairwise(edges.tolist()))


def series_bounds(frame: pl.DataFrame, schema: FeatureSchema) -> list[tuple[int, int]]:
    """The spans windows run over: each entity's rows (`entity_bounds`), cut again wherever
    the time advances by more than the schema's `max_gap`, so no window spans the gap."""
    bounds = entity_bounds(frame, schema)
    if schema.max_gap is None or not schema.time_column or frame.height < 2:
        return bounds
    times = frame[schema.time_column]
    step = times.diff()
    if step.dtype == pl.Duration:
        gap = (step > schema.max_gap).fill_null(False).to_numpy()
    else:  # a numeric clock: its differences, read as seconds
        gap = (step.cast(pl.Float64) > schema.max_gap.total_seconds()).fill_null(False).to_numpy()
    cuts = np.flatnonzero(gap)
    spans = []
    for start, stop in bounds:
        edges = [start, *cuts[(cuts > start) & (cuts < stop)].tolist(), stop]
        spans += list(pairwise(edges))
    return spans


def make_windows(
    matrix: np.ndarray, bounds: list[tuple[int, int]], window: WindowSpec, *, pad: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten sliding windows (oldest step first) within each entity span.

    With `pad`, each span starts with `length - 1` copies of its first row so that every
    row gets the window ending at it (scoring); without, only full windows at `stride`
    (training). Returns the windows and, for each, the row index of its last step."""
    length = window.length
    windows, ends = [], []
    for start, stop in bounds:
        series = matrix[start:stop]
        if pad:
            series = np.concatenate([np.repeat(series[:1], length - 1, axis=0), series])
            step = 1
        else:
            step = window.stride
        if len(series) < length:
            continue
        view = sliding_window_view(series, length, axis=0)[::step]  # (n, features, length)
        windows.append(view.transpose(0, 2, 1).reshape(len(view), -1))
        first_end = start if pad else start + length - 1
        ends.append(first_end + np.arange(len(view)) * step)
    if not windows:
        raise DataError(f"no entity has at least {length} rows, the window length.")
    return np.ascontiguousarray(np.concatenate(windows), dtype=np.float32), np.concatenate(ends)


@dataclass(frozen=True)
class WindowIndex:
    """Where each window ends (the row of its last step) and the spans windows run over: what
    the `mean` rule needs to find a window's neighbours."""

    ends: np.ndarray
    spans: list[tuple[int, int]]
