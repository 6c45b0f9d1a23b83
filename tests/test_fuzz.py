"""Property-based tests (Hypothesis, with polars' frame strategies) over ingest, schema
validation and scoring: whatever the input, the pipeline either works or raises a
`PipelineError` (never another exception), and scores do not depend on column or row order.

CI runs the `ci` profile (a few hundred inputs). The dedicated run tries over 10,000:

    make fuzz     # HYPOTHESIS_PROFILE=fuzz pytest tests/test_fuzz.py --hypothesis-show-statistics

Its figures are in docs/reliability.md ("Fuzzing")."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from common import DATA
from hypothesis import example, given
from hypothesis import strategies as st
from polars.testing.parametric import column, dataframes

from pipeline.core.errors import DataError, PipelineError
from pipeline.data import ingest
from pipeline.runtime import Scorer

TABULAR_BATCH = pl.read_csv(DATA / "tabular" / "batch.csv")
FORMATS = [".csv", ".parquet", ".ndjson", ".arrow"]
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
WIDE_FLOATS = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False, allow_infinity=False)


@pytest.fixture(scope="module")
def scorer(tabular_model: Path) -> Scorer:
    return Scorer.load(tabular_model)


def write(frame: pl.DataFrame, suffix: str, folder: Path) -> Path:
    path = folder / f"fuzz{suffix}"
    {".csv": frame.write_csv, ".parquet": frame.write_parquet, ".ndjson": frame.write_ndjson, ".arrow": frame.write_ipc}[
        suffix
    ](path)
    return path


# -- ingest -------------------------------------------------------------------------------


@given(
    frame=dataframes(
        max_cols=6,
        max_size=30,
        allow_time_zones=False,
        excluded_dtypes=[
            pl.Object,
            pl.Decimal,
            pl.Categorical,
            pl.Enum,
            pl.Binary,
            pl.Time,
            pl.Duration,
            pl.Array,
            pl.List,
            pl.Struct,
            pl.Null,
            pl.Int128,
            pl.UInt128,
        ],
    ),
    suffix=st.sampled_from(FORMATS),
)
def test_any_frame_written_in_any_format_reads_or_is_refused(frame: pl.DataFrame, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = write(frame, suffix, Path(folder))
        except (pl.exceptions.PolarsError, ValueError):
            return  # polars cannot write this frame in this format: nothing to read
        try:
            read = ingest.read_file(path)
        except DataError:
            return
        assert read.height == frame.height and read.width <= frame.width


@given(data=st.binary(max_size=400), suffix=st.sampled_from(FORMATS))
@example(data=b"\r\x00", suffix=".csv")  # found by this test: the header check raised csv.Error
def test_arbitrary_bytes_are_read_or_refused_with_a_data_error(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            ingest.read_file(path)
        except DataError as error:
            assert str(path) in str(error)


# -- schema validation --------------------------------------------------------------------


def shuffled_batch_columns() -> st.SearchStrategy[pl.DataFrame]:
    """The model's own columns, some dropped, renamed or refilled with values of a random type."""

    def build(draw: st.DrawFn) -> pl.DataFrame:
        rows = draw(st.integers(1, 12))
        frame = TABULAR_BATCH.head(rows)
        for name in draw(st.lists(st.sampled_from(frame.columns), max_size=4, unique=True)):
            action = draw(st.sampled_from(["drop", "rename", "refill"]))
            if action == "drop":
                frame = frame.drop(name)
            elif action == "rename":
                frame = frame.rename({name: name.upper()})
            else:
                values = draw(
                    st.lists(
                        st.one_of(FLOATS, st.integers(-(10**12), 10**12), st.text(max_size=5), st.booleans(), st.none()),
                        min_size=rows,
                        max_size=rows,
                    )
                )
                frame = frame.with_columns(pl.Series(name, values, strict=False))
        return frame

    return st.composite(build)()


@given(frame=shuffled_batch_columns())
def test_validation_either_scores_every_row_or_raises_a_pipeline_error(scorer: Scorer, frame: pl.DataFrame) -> None:
    try:
        scored = scorer.score(frame)
    except PipelineError:
        return
    assert scored.height == frame.height
    assert np.isfinite(scored["score"].to_numpy()).all()


# -- scoring ------------------------------------------------------------------------------


def valid_batches() -> st.SearchStrategy[pl.DataFrame]:
    """Frames the tabular model accepts: its numeric columns anywhere in ±1e30 (or missing,
    which it imputes), its categories or unseen ones."""
    numeric = ["temperature", "pressure", "duration_min", "energy_kwh", "yield_pct", "defects"]
    categories = {
        "line": ["L1", "L2", "L3", "L9"],
        "product": ["bolt", "nut", "washer", "gear", "?"],
        "shift": ["day", "night", "swing"],
    }
    cols = [column("batch_id", dtype=pl.Int64, unique=True, allow_null=False)]
    cols += [column(name, dtype=pl.Float64, strategy=st.one_of(WIDE_FLOATS, st.none())) for name in numeric]
    cols += [
        column(name, dtype=pl.String, strategy=st.sampled_from(values), allow_null=False)
        for name, values in categories.items()
    ]
    return dataframes(cols, min_size=1, max_size=40)


@given(frame=valid_batches(), seed=st.integers(0, 2**32 - 1))
def test_scores_are_finite_and_do_not_depend_on_column_or_row_order(scorer: Scorer, frame: pl.DataFrame, seed: int) -> None:
    scored = scorer.score(frame)
    rng = np.random.default_rng(seed)
    columns = list(rng.permutation(frame.columns))
    rows = rng.permutation(frame.height)
    reordered = scorer.score(frame.select(columns)[rows.tolist()])
    assert np.isfinite(scored["score"].to_numpy()).all()
    back = reordered.sort("batch_id")["score"].to_numpy()
    np.testing.assert_allclose(back, scored.sort("batch_id")["score"].to_numpy(), rtol=1e-5, atol=1e-5)
