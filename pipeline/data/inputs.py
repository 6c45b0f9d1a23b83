"""Rows of a table into model inputs, written once for training, scoring, re-thresholding and the
scikit-learn estimator: coerced to the schema, sensor rows sorted by entity and time (repeated
times merged or refused), one-hot encoded into a float32 matrix, and sensor rows cut into
windows. What differs between the callers is named by the switches of `model_inputs`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from pipeline.core.errors import DataError, where
from pipeline.data.schema import FeatureSchema, InputReport, RowNumbers, coerce, row_numbers, to_matrix
from pipeline.data.windows import WindowIndex, make_windows, series_bounds, sort_for_windows

# padded: every row gets the window ending at it, a span's first row repeated before its start
# (scoring); full: only full windows, every `stride`-th (training); none: rows as they are.
Windows = Literal["padded", "full", "none"]
FILE_ROW = "__file_row"  # carried through the sort of sensor rows, so errors after it name file rows


@dataclass
class ModelInputs:
    """A table as the model reads it."""

    x: np.ndarray  # float32, one row per input: a row, or in sensor mode a window
    rows: pl.DataFrame  # the rows in the model's order (sensor: sorted, repeats merged), with the carried columns
    report: InputReport  # repairs: imputed values, unseen categories, rows re-sorted or merged
    windows: WindowIndex | None  # sensor windows: where each input ends, and the spans windows run over
    file_rows: RowNumbers  # each of `rows`' number in its file (0-based), for errors after this step


def model_inputs(  # noqa: PLR0913 - keyword-only switches, each named for what differs between callers
    frame: pl.DataFrame,
    schema: FeatureSchema,
    *,
    file: str | None = None,
    row_offset: RowNumbers = 0,
    windows: Windows = "padded",
    keep_infinite: bool = False,
    coerced: bool = False,
    carry: Sequence[str] = (),
) -> ModelInputs:
    """`frame` as model inputs. `file` and `row_offset` place its rows in their file for errors.
    `keep_infinite` (scoring) keeps an infinite reading as the most extreme value there is
    instead of imputing it; `coerced` skips the cast to the schema (training coerces each file
    first, to name it in errors); `carry` columns (a label) travel with the rows through the
    sort, outside the features."""
    carried = frame.select(carry) if carry else None
    if not coerced:
        frame = coerce(frame, schema, file, row_offset)
        frame = frame.with_columns(carried) if carried is not None else frame
    resorted, arrived = False, frame.height
    if schema.mode == "sensor":
        numbered = frame.with_columns(pl.Series(FILE_ROW, row_numbers(row_offset, frame.height)))
        frame, resorted = sort_for_windows(numbered, schema, file, row_offset)
        row_offset = frame[FILE_ROW].to_numpy()  # sorted (and merged) with the rows: errors below name them
        frame = frame.drop(FILE_ROW)
    matrix, report = to_matrix(frame, schema, file, row_offset, keep_infinite=keep_infinite)
    report.resorted, report.merged = resorted, arrived - frame.height
    index = None
    window = schema.window
    if schema.mode == "sensor" and window is not None and window.length > 1 and windows != "none":
        spans = series_bounds(frame, schema)
        if not frame.height:  # no series, no windows: an empty batch gives no inputs
            matrix, ends = np.zeros((0, len(schema.input_names)), np.float32), np.zeros(0, np.int64)
        else:
            try:
                matrix, ends = make_windows(matrix, spans, window, pad=windows == "padded")
            except DataError as error:
                raise DataError(f"{str(error).rstrip('.')}{where(file)}.") from error
        index = WindowIndex(ends, spans)
    return ModelInputs(matrix, frame, report, index, row_offset)
