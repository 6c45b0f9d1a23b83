"""Schema learning, validation against it, feature matrices and windows."""

from __future__ import annotations

import logging
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from pipeline.core.config import DataConfig, WindowSpec
from pipeline.core.errors import DataError, SchemaError
from pipeline.data.schema import coerce, learn_schema, to_matrix
from pipeline.data.windows import WindowIndex, entity_bounds, make_windows, sort_for_windows
from pipeline.runtime.steps import StepRule

TABLE = pl.DataFrame(
    {
        "id": [1, 2, 3, 4],
        "temp": [1.0, 2.0, 3.0, 4.0],
        "count": [1, 2, 3, 4],
        "site": ["a", "b", "a", "c"],
        "label": [0, 0, 1, 0],
    }
)
CONFIG = DataConfig(id_columns=["id"], label_column="label")


def test_learn_schema_infers_numeric_and_categorical_and_skips_keys() -> None:
    schema = learn_schema(TABLE, CONFIG)
    assert [(c.name, c.kind) for c in schema.columns] == [("temp", "numeric"), ("count", "numeric"), ("site", "categorical")]
    assert schema.row_features == ["temp", "count", "site=a", "site=b", "site=c"]
    assert schema.key_columns == ["id"]


def test_column_order_does_not_matter_and_extra_columns_are_ignored() -> None:
    schema = learn_schema(TABLE, CONFIG)
    shuffled = TABLE.select("site", "label", "count", "id", "temp").with_columns(extra=pl.lit(7))
    a, _ = to_matrix(coerce(TABLE, schema, "f"), schema)
    b, _ = to_matrix(coerce(shuffled, schema, "f"), schema)
    np.testing.assert_array_equal(a, b)


def test_missing_column_is_named() -> None:
    schema = learn_schema(TABLE, CONFIG)
    with pytest.raises(SchemaError, match=r"column 'count' is missing \(file 'new.csv'\)"):
        coerce(TABLE.drop("count"), schema, "new.csv")


def test_text_in_numeric_column_names_file_column_and_row() -> None:
    schema = learn_schema(TABLE, CONFIG)
    bad = TABLE.with_columns(pl.Series("temp", ["1.0", "2.0", "oops", "4"]))
    with pytest.raises(SchemaError, match=r"got text 'oops' \(file 'b.csv', column 'temp', row 3\)"):
        coerce(bad, schema, "b.csv")


def test_integer_column_is_coerced_losslessly() -> None:
    schema = learn_schema(TABLE, CONFIG)
    ints = TABLE.with_columns(pl.col("temp").cast(pl.Int32))
    assert coerce(ints, schema, None)["temp"].dtype == pl.Float64


def test_nan_under_error_policy_names_row() -> None:
    schema = learn_schema(TABLE, CONFIG)
    bad = TABLE.with_columns(pl.Series("temp", [1.0, None, 3.0, 4.0]))
    with pytest.raises(DataError, match=r"missing value \(file 'x.csv', column 'temp', row 2\)"):
        to_matrix(coerce(bad, schema, "x.csv"), schema, "x.csv")


def test_impute_policy_fills_training_median_and_counts() -> None:
    schema = learn_schema(TABLE, CONFIG.model_copy(update={"missing": "impute"}))
    bad = TABLE.with_columns(pl.Series("temp", [1.0, float("nan"), float("inf"), 4.0]))
    matrix, report = to_matrix(coerce(bad, schema, None), schema)
    assert matrix[1, 0] == matrix[2, 0] == 2.5  # median of 1, 2, 3, 4
    assert report.imputed == {"temp": 2}


def test_all_float_inputs_take_one_step_with_the_same_rows_and_the_same_errors() -> None:
    floats = pl.DataFrame({"a": pl.Series([1.5, -2.0, 3e38], dtype=pl.Float32), "b": [0.25, 1e300, -4.0]})
    schema = learn_schema(floats.with_columns(b=pl.Series([0.25, 1.0, -4.0])), DataConfig())
    matrix, _ = to_matrix(coerce(floats, schema, None), schema)
    assert matrix.dtype == np.float32 and matrix.flags["C_CONTIGUOUS"]
    # float64 beyond float32's range becomes inf, as column by column (the graphs clip it)
    np.testing.assert_array_equal(matrix, np.array([[1.5, 0.25], [-2.0, np.inf], [3e38, -4.0]], np.float32))
    missing = floats.with_columns(b=pl.Series([0.25, None, -4.0]))
    with pytest.raises(DataError, match=r"missing value \(file 'f.parquet', column 'b', row 12\)"):
        to_matrix(coerce(missing, schema, "f.parquet"), schema, "f.parquet", row_offset=10)


def test_unseen_category_is_counted_not_fatal() -> None:
    schema = learn_schema(TABLE, CONFIG)
    new = TABLE.with_columns(pl.Series("site", ["a", "zzz", None, "c"]))
    matrix, report = to_matrix(coerce(new, schema, None), schema)
    assert report.unseen_categories == {"site": 2}
    np.testing.assert_array_equal(matrix[1, 2:], [0, 0, 0])
    np.testing.assert_array_equal(matrix[3, 2:], [0, 0, 1])


def test_windows_never_cross_entities_and_pad_for_scoring() -> None:
    frame = pl.DataFrame({"m": ["b", "a", "a", "b", "a"], "t": [1, 3, 1, 2, 2], "v": [10.0, 3.0, 1.0, 20.0, 2.0]})
    config = DataConfig(mode="sensor", time_column="t", entity_column="m", window=WindowSpec(length=2))
    schema = learn_schema(frame, config)
    frame, resorted = sort_for_windows(coerce(frame, schema, None), schema)
    assert resorted
    matrix, _ = to_matrix(frame, schema)
    bounds = entity_bounds(frame, schema)
    assert bounds == [(0, 3), (3, 5)]
    padded, ends = make_windows(matrix, bounds, schema.window, pad=True)
    assert padded.tolist() == [[1, 1], [1, 2], [2, 3], [10, 10], [10, 20]]
    assert ends.tolist() == [0, 1, 2, 3, 4]
    full, ends = make_windows(matrix, bounds, schema.window, pad=False)
    assert full.tolist() == [[1, 2], [2, 3], [10, 20]]
    assert ends.tolist() == [1, 2, 4]
    assert schema.input_names == ["v[t-1]", "v[t-0]"]


def mean_of_last_windows(scores: np.ndarray, index: WindowIndex, length: int) -> np.ndarray:
    """The step rule's `mean` over windows placed by `index` (pipeline.runtime.steps)."""
    return StepRule(window=WindowSpec(length=length, rule="mean")).step_scores(scores, index)


def test_the_mean_rule_averages_each_steps_last_windows_within_its_span() -> None:
    """Window length 3: a span's first 2 steps (padded windows) keep their score and enter no
    mean; later steps average the full windows ending at their last 3 steps; spans never mix."""
    scores = np.array([100.0, 100.0, 1.0, 2.0, 3.0, 4.0, 50.0, 50.0, 5.0, 7.0])
    index = WindowIndex(np.arange(10), [(0, 6), (6, 10)])
    got = mean_of_last_windows(scores, index, 3)
    np.testing.assert_allclose(got, [100, 100, 1, 1.5, 2, 3, 50, 50, 5, 6])


def test_the_mean_rule_keeps_infinite_and_missing_scores_local() -> None:
    scores = np.array([0.0, 0.0, 1.0, np.inf, 1.0, 1.0, 1.0, np.nan, 1.0, 1.0, 1.0])
    got = mean_of_last_windows(scores, WindowIndex(np.arange(11), [(0, 11)]), 3)
    assert np.isposinf(got[3:6]).all() and np.isfinite(got[[2, 6]]).all()
    assert np.isnan(got[7:10]).all() and got[10] == 1.0


def test_the_mean_rule_finds_neighbours_by_where_windows_end() -> None:
    """Training windows at stride 2 (or subsampled): a window's neighbours are those ending in
    its last `length` steps, however many that is."""
    index = WindowIndex(np.array([2, 4, 6, 8]), [(0, 9)])
    got = mean_of_last_windows(np.array([1.0, 3.0, 5.0, 7.0]), index, 3)
    np.testing.assert_allclose(got, [1, 2, 4, 6])


def test_too_few_rows_for_a_window_is_an_error() -> None:
    with pytest.raises(DataError, match="at least 5 rows"):
        make_windows(np.ones((3, 2), np.float32), [(0, 3)], WindowSpec(length=5), pad=False)


def test_cli_window_override_keeps_the_config_files_stride(tmp_path) -> None:
    from pipeline.core.config import load_config

    path = tmp_path / "c.toml"
    path.write_text('[data]\nmode = "sensor"\ntime_column = "t"\nwindow = { length = 12, stride = 3 }\n')
    config = load_config(path, data={"window": {"length": 6}, "missing": None})
    assert (config.data.window.length, config.data.window.stride) == (6, 3)


def _repeated_reading(policy: str):
    """Two machines; machine 'b' sends 00:02 twice (5.0, then 7.0), machine 'a' is clean."""
    from datetime import datetime

    minute = [datetime(2024, 3, 10, 0, m) for m in range(4)]
    frame = pl.DataFrame(
        {
            "machine": ["a"] * 4 + ["b"] * 5,
            "t": minute + [minute[0], minute[1], minute[2], minute[2], minute[3]],
            "temp": [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 5.0, 7.0, 4.0],
            "mode": ["x"] * 7 + ["y", "x"],
        }
    )
    config = DataConfig(
        mode="sensor", time_column="t", entity_column="machine", duplicates=policy, window=WindowSpec(length=2)
    )
    return frame, learn_schema(frame, config)


def test_a_repeated_time_is_refused_by_default_naming_both_rows() -> None:
    frame, schema = _repeated_reading("error")
    with pytest.raises(SchemaError, match=r"appears twice for entity 'b' \(rows 7 and 8\)"):
        sort_for_windows(frame, schema)


@pytest.mark.parametrize(("policy", "temp"), [("last", 7.0), ("mean", 6.0)])
def test_a_repeated_time_is_merged_by_the_policy_and_other_entities_are_untouched(policy: str, temp: float) -> None:
    frame, schema = _repeated_reading(policy)
    assert schema.duplicates == policy  # stored with the model, so scoring applies the same rule
    merged, resorted = sort_for_windows(frame, schema)
    assert not resorted and merged.height == frame.height - 1
    assert merged.filter(pl.col("machine") == "a")["temp"].to_list() == [1.0, 2.0, 3.0, 4.0]
    b = merged.filter(pl.col("machine") == "b")
    assert b["t"].is_sorted() and b["temp"].to_list() == [1.0, 2.0, temp, 4.0]
    assert b["mode"].to_list() == ["x", "x", "y", "x"]  # a category is never averaged: the last reading's
    shuffled, resorted = sort_for_windows(frame[[8, 0, 5, 1, 2, 4, 3, 6, 7]], schema)  # 5.0 still before 7.0
    assert resorted and shuffled.equals(merged)


def test_max_gap_cuts_an_entitys_series_where_time_jumps_and_only_there() -> None:
    from datetime import datetime, timedelta

    from pipeline.data.windows import series_bounds

    base = datetime(2024, 1, 1)
    minutes = [0, 1, 2, 30, 31, 32, 33]  # one 28-minute outage in machine a
    frame = pl.DataFrame(
        {
            "machine": ["a"] * 7 + ["b"] * 3,
            "t": [base + timedelta(minutes=m) for m in minutes + [0, 5, 10]],
            "temp": np.arange(10.0),
        }
    )
    config = dict(mode="sensor", time_column="t", entity_column="machine", window=WindowSpec(length=2))
    gapless = learn_schema(frame, DataConfig(**config))
    assert series_bounds(frame, gapless) == entity_bounds(frame, gapless) == [(0, 7), (7, 10)]
    schema = learn_schema(frame, DataConfig(**config, max_gap="PT10M"))
    assert schema.max_gap == timedelta(minutes=10)
    assert series_bounds(frame, schema) == [(0, 3), (3, 7), (7, 10)]  # b's 5-minute steps are no gap
    numeric = frame.with_columns(pl.Series("t", [m * 60.0 for m in minutes] + [0.0, 300.0, 600.0]))  # seconds
    assert series_bounds(numeric, learn_schema(numeric, DataConfig(**config, max_gap=600))) == [(0, 3), (3, 7), (7, 10)]
    with pytest.raises(ValueError, match="max_gap must be a positive duration"):
        DataConfig(**config, max_gap=0)


def test_label_like_columns_never_train_as_features(shared_data, caplog: pytest.LogCaptureFixture) -> None:
    """A SKAB file read at every default: its `anomaly` and `changepoint` columns are the
    answers, not measurements; so is a column named `label` or a 0/1 `is_fault`."""
    skab = pl.read_csv(shared_data / "skab" / "valve1" / "0.csv", separator=";")
    schema = learn_schema(skab, DataConfig())
    names = [c.name for c in schema.columns]
    assert "anomaly" not in names and "changepoint" not in names and len(names) == 8
    assert "looks like a label" in caplog.text
    table = TABLE.with_columns(is_fault=pl.Series([0, 1, 0, 0]), fault_code=pl.Series([3, 1, 7, 2]))
    inferred = [c.name for c in learn_schema(table, DataConfig(id_columns=["id"])).columns]
    assert inferred == ["temp", "count", "site", "fault_code"]  # `label` and the 0/1 `is_fault` left out
    named = learn_schema(table, DataConfig(features=["temp", "label"]))
    assert [c.name for c in named.columns] == ["temp", "label"]  # named features stand


def test_ignored_columns_are_neither_features_nor_keys() -> None:
    schema = learn_schema(TABLE, DataConfig(id_columns=["id"], ignore_columns=["count"]))
    assert [c.name for c in schema.columns] == ["temp", "site"] and schema.key_columns == ["id"]


@pytest.mark.parametrize(
    ("values", "example"),
    [
        (["3,14", "2,5", "10,0"], "3,14"),  # decimal comma
        (["999", "10,126", "1,234,567"], "10,126"),  # thousands
        (["1.234,5", "7,1", "2.000,0"], "1.234,5"),
        (["12.5 kg", "3 kg", "4 kg"], "12.5 kg"),
    ],
)  # units
def test_numbers_written_as_text_stop_training_with_the_fix(values: list[str], example: str) -> None:
    """Once they were taken for free text and training went on without the column."""
    table = pl.DataFrame({"temp": [1.0, 2.0, 3.0], "weight": values})
    with pytest.raises(
        SchemaError,
        match=rf"column 'weight' holds numbers written as text, such as '{example}'.*"
        r"decimal mark.*--ignore-columns weight",
    ):
        learn_schema(table, DataConfig(), "w.csv")
    codes = pl.DataFrame({"temp": [1.0, 2.0, 3.0], "line": ["3A", "12B", "L1"]})
    assert [c.kind for c in learn_schema(codes, DataConfig()).columns] == ["numeric", "categorical"]


def test_an_empty_column_is_refused_before_training_by_name() -> None:
    """It once trained and then crashed in the drift reference (argmax of no categories)."""
    table = TABLE.with_columns(notes=pl.lit(None, dtype=pl.String))
    with pytest.raises(
        SchemaError,
        match=r"column 'notes' is empty in every row \(file 't.csv', column 'notes'\).*"
        r"--ignore-columns notes",
    ):
        learn_schema(table, CONFIG, "t.csv")
    ignored = DataConfig(id_columns=["id"], label_column="label", ignore_columns=["notes"])
    assert "notes" not in [c.name for c in learn_schema(table, ignored).columns]


def test_a_unique_integer_column_is_an_identifier_whatever_its_name() -> None:
    """A shuffled customer number named `cust` (3,000 distinct of 3,000 rows) trained as a
    feature; so would any new customer's number look anomalous."""
    rng = np.random.default_rng(0)
    table = pl.DataFrame(
        {
            "cust": rng.permutation(np.arange(100_000, 103_000)),
            "spend": rng.normal(size=3000),
            "visits": rng.integers(0, 20, 3000),
        }
    )
    schema = learn_schema(table, DataConfig())
    assert schema.id_columns == ["cust"] and [c.name for c in schema.columns] == ["spend", "visits"]
    few = table.head(500)  # too few rows to tell an identifier from a measurement
    assert "cust" in [c.name for c in learn_schema(few, DataConfig()).columns]


def test_text_columns_a_sensor_model_leaves_out_are_named(caplog: pytest.LogCaptureFixture) -> None:
    """Newcomer review, mistake 59: `site` and `comment` were dropped from a sensor model with no line."""
    rows = 40
    frame = pl.DataFrame(
        {
            "ts": pl.datetime_range(datetime(2026, 1, 1), datetime(2026, 1, 1, 0, rows - 1), "1m", eager=True),
            "a": np.linspace(0, 1, rows),
            "site": ["north"] * rows,
            "comment": [f"note {i}" for i in range(rows)],
        }
    )
    with caplog.at_level(logging.WARNING):
        schema = learn_schema(frame, DataConfig(mode="sensor", time_column="ts", window={"length": 4}))
    assert [c.name for c in schema.columns] == ["a"]
    assert "column 'site' is text: a sensor model reads numeric signals only" in caplog.text
    assert "--entity-column site" in caplog.text and "column 'comment' is text" in caplog.text
