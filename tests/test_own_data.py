"""A newcomer's own CSV, end to end: the README's "Your own data in ten minutes" commands run
as written on a file of that shape (an id, a datetime, a text category, free text, one stray
text value, one missing value), and each trap it once fell into is a test of its own."""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from common import ROOT

from pipeline.core.config import DataConfig
from pipeline.core.errors import SchemaError
from pipeline.data.schema import coerce, column_role, learn_schema
from pipeline.runtime import Scorer, score_files

STRAY_ROW, MISSING_ROW = 17, 42  # 0-based; errors count data rows from 1


def own_csv(rows: int = 400, seed: int = 0, stray: bool = True) -> pl.DataFrame:
    """`id, ts, a, b, c, site, comment`: what a user's export of a table looks like."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 1, 1) + timedelta(days=seed)
    frame = pl.DataFrame(
        {
            "id": np.arange(1000 + 10_000 * seed, 1000 + 10_000 * seed + rows),
            "ts": [(start + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(rows)],
            "a": rng.normal(10, 1, rows).round(3).astype(str),
            "b": rng.normal(5, 2, rows).round(3),
            "c": rng.normal(0, 1, rows).round(3),
            "site": rng.choice(["north", "south", "east"], rows),
            "comment": [f"checked by operator {i}" for i in range(rows)],
        }
    )
    row = pl.int_range(pl.len())
    return frame.with_columns(
        a=pl.when(row == STRAY_ROW).then(pl.lit("n/a") if stray else pl.col("a")).otherwise(pl.col("a")),
        b=pl.when(row == MISSING_ROW).then(None).otherwise(pl.col("b")),
    )


def readme_commands() -> list[str]:
    """The `vad …` lines of the README's walkthrough, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own data in ten minutes", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("vad ")]


def readme_error_line() -> str:
    """The error the walkthrough shows for the stray text, as the README prints it."""
    text = (ROOT / "README.md").read_text()
    return next(line for line in text.splitlines() if line.startswith("error: column 'a' must be numeric"))


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    commands = readme_commands()
    assert [c.split()[1] for c in commands] == ["train", "train", "score", "inspect"]
    own_csv().write_csv(tmp_path / "mine.csv")
    own_csv(rows=120, seed=1, stray=False).write_csv(tmp_path / "new.csv")

    first = run(commands[0], tmp_path)  # stops at the stray text, naming file, column and row
    assert first.returncode == 2
    assert f"column 'a' must be numeric, got text 'n/a' (file 'mine.csv', column 'a', row {STRAY_ROW + 1})" in first.stderr
    assert readme_error_line() in first.stderr.splitlines()  # the README shows the line as it is printed
    assert "column 'id' looks like an identifier" in first.stderr and "column 'ts' holds times" in first.stderr
    assert not (tmp_path / "exported").exists()

    fixed = pl.read_csv(tmp_path / "mine.csv", infer_schema=False)
    fixed.with_columns(a=pl.when(pl.col("a") == "n/a").then(None).otherwise(pl.col("a"))).write_csv(tmp_path / "mine.csv")
    said = []
    for command in commands[1:]:
        result = run(command, tmp_path)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        said.append(result.stderr + result.stdout)
    assert "note: column 'comment' looks like free text" in said[0] and "WARNING" not in said[0]
    assert "features: a, b, c, site (one-hot, 3 categories); keys in the output: id, ts" in said[0]
    assert "missing values filled with the training median: a: 1, b: 1" in said[0]
    scores = pl.read_csv(tmp_path / "scores.csv")
    assert scores["id"].to_list() == list(range(11_000, 11_120))  # the key, in the file's order
    assert {"score", "percentile", "is_anomaly", "top1_feature", "top1_share"} <= set(scores.columns)
    assert set(scores["top1_feature"]) <= {"a", "b", "c", "site"}  # never id, ts or comment
    assert scores["is_anomaly"].mean() < 0.1  # new rows from the same process are mostly normal


def frame_of(**columns: object) -> pl.DataFrame:
    return pl.DataFrame(columns)


def test_identifiers_are_keys_and_times_are_not_features(caplog: pytest.LogCaptureFixture) -> None:
    frame = frame_of(
        row_id=np.arange(50),
        orderId=np.arange(50) * 7 % 50,
        serial=np.arange(100, 150),
        humid=np.linspace(30, 60, 50),
        when=pl.datetime_range(datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 49), "1m", eager=True),
        temp=np.ones(50),
    )
    with caplog.at_level(logging.WARNING):
        schema = learn_schema(frame, DataConfig())
    assert schema.id_columns == ["row_id", "orderId", "serial", "when"]  # by name, by name, by counting up; a time
    assert [c.name for c in schema.columns] == ["humid", "temp"]  # `humid` ends in "id" but is a reading
    # The time stays in the scores, and a series gets a ready-to-paste command (once it trained as a table)
    assert "column 'when' holds times: kept as a key" in caplog.text
    assert "vad train DATA --mode sensor --time-column when" in caplog.text
    assert column_role(pl.Series("ts", ["2026-01-01 10:00", "2026-01-01 10:05"])) == "time"
    assert column_role(pl.Series("line", ["L1", "L2", "L1"])) == "feature"


def test_named_features_are_taken_as_named() -> None:
    frame = frame_of(id=np.arange(20), x=np.arange(20) * 1.5)
    schema = learn_schema(frame, DataConfig(features=["id", "x"]))
    assert [c.name for c in schema.columns] == ["id", "x"] and schema.id_columns == []


def test_a_stray_text_value_in_a_numeric_column_names_its_row() -> None:
    frame = frame_of(temperature=[str(20.0 + i / 10) for i in range(30)])
    frame = frame.with_columns(temperature=pl.when(pl.int_range(30) == 11).then(pl.lit("err")).otherwise("temperature"))
    with pytest.raises(SchemaError, match=r"column 'temperature' must be numeric, got text 'err' .*row 12\)"):
        learn_schema(frame, DataConfig(), "plant.csv")
    clean = frame_of(temperature=[str(20.0 + i / 10) for i in range(30)])  # numbers written as text
    assert learn_schema(clean, DataConfig()).columns[0].kind == "numeric"


def test_scoring_can_impute_where_the_model_would_refuse(sensor_model: Path, tmp_path: Path) -> None:
    batch = pl.read_parquet(ROOT / "data" / "sensors" / "batch.parquet")
    gap = batch.with_columns(load=pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("load")))
    gap.write_parquet(tmp_path / "gap.parquet")
    strict = Scorer.load(sensor_model)
    assert strict.schema.missing == "error"
    refused = score_files(strict, tmp_path / "gap.parquet", tmp_path / "strict.parquet")  # that machine, alone
    machine = batch["machine"][5]
    assert list(refused.inputs.failed) == [machine] and "missing value" in refused.inputs.failed[machine]
    assert refused.rows == batch.filter(pl.col("machine") != machine).height
    report = score_files(Scorer.load(sensor_model, missing="impute"), tmp_path / "gap.parquet", tmp_path / "scores.parquet")
    assert report.rows == batch.height and report.inputs.imputed == {"load": 1}


def test_the_output_suffix_picks_the_format(tabular_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = Scorer.load(tabular_model)
    source = ROOT / "data" / "tabular" / "batch.csv"
    # Several chunks each: every format is sunk from the stream itself (issue 37), not converted.
    parquet = pl.read_parquet(score_files(scorer, source, tmp_path / "scores.parquet", chunk_rows=300).output)
    readers = {
        ".csv": pl.read_csv,
        ".tsv": lambda p: pl.read_csv(p, separator="\t"),
        ".ndjson": pl.read_ndjson,
        ".arrow": pl.read_ipc,
    }
    for suffix, read in readers.items():
        written = read(score_files(scorer, source, tmp_path / f"scores{suffix}", chunk_rows=300).output)
        assert written.height == parquet.height == pl.read_csv(source).height
        np.testing.assert_allclose(written["score"].to_numpy(), parquet["score"].to_numpy(), rtol=1e-6)
        assert written["top1_feature"].cast(pl.String).to_list() == parquet["top1_feature"].cast(pl.String).to_list()
    with pytest.raises(Exception, match="unsupported format '.xlsx'"):
        score_files(scorer, source, tmp_path / "scores.xlsx")
    monkeypatch.setenv("VAD_FULL_DISK_AT", "write")  # a CSV whose stream fails half-way: nothing is left
    with pytest.raises(OSError, match="No space left"):
        score_files(scorer, source, tmp_path / "failed.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"scores{s}" for s in sorted([*readers, ".parquet"])]


def test_a_table_without_keys_gets_its_row_numbers_as_key(tmp_path: Path) -> None:
    """Without an id column the output still says which row is which: `row`, counted from 1
    in each file (as errors count), whatever the chunking."""
    from common import FAST_TRAIN

    from pipeline.core.config import load_config
    from pipeline.training.fit import fit_model

    own_csv(stray=False).select("a", "b", "c", "site").write_csv(tmp_path / "plain.csv")
    config = load_config(None, name="plain", data={"missing": "impute"}, train=FAST_TRAIN)
    scorer = Scorer.load(fit_model(tmp_path / "plain.csv", config, tmp_path / "models").version_dir)
    assert scorer.schema.key_columns == []
    report = score_files(scorer, tmp_path / "plain.csv", tmp_path / "scores.parquet", chunk_rows=64)
    scores = pl.read_parquet(report.output)
    assert scores.columns[0] == "row" and scores["row"].to_list() == list(range(1, 401))
    assert report.top[0]["row"] == scores.sort("score", descending=True)["row"][0]


def test_score_report_lands_beside_the_scores(tabular_model: Path, tmp_path: Path) -> None:
    """`vad score --report`: the counts and the plots a CLI user never saw (they were Prefect
    artifacts only), as one markdown file with the images inline."""
    result = run(
        f"vad score {tabular_model} {ROOT / 'data' / 'tabular' / 'batch.csv'} --output scores.csv --report", tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "scores.report.md").read_text()
    anomalies = int(pl.read_csv(tmp_path / "scores.csv")["is_anomaly"].sum())
    assert f"| batch.csv | 1000 | {anomalies} |" in report
    assert report.count("data:image/png;base64,") == 1  # the score histogram (tables have no time axis)


def test_the_score_report_judges_alerts_as_the_scheduled_flow_does(sensor_model: Path, tmp_path: Path) -> None:
    """It once said "Alerts: 0" beside every flagged row: the CLI never ran the alert rules."""
    result = run(
        f"vad score {sensor_model} {ROOT / 'data' / 'sensors' / 'batch.parquet'} --output s.parquet --report", tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "s.report.md").read_text()
    assert "Alerts: 1\n- **" in report and "s.parquet: " in report  # severity, id, the scores it judged


def transactions(rows: int = 600, seed: int = 1) -> pl.DataFrame:
    """The newcomer's transactions: amounts, a channel, and `is_fraud` (0/1) as exported."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "amount": rng.lognormal(3, 1, rows).round(2),
            "items": rng.integers(1, 9, rows),
            "channel": rng.choice(["web", "shop", "phone"], rows),
            "is_fraud": (rng.random(rows) < 0.02).astype(np.int8),
        }
    )


def test_N1_a_two_valued_column_named_like_fraud_is_a_label(caplog: pytest.LogCaptureFixture) -> None:
    """`is_fraud` (0/1) was trained as a feature, so scoring new, unlabelled rows failed for the
    missing column."""
    with caplog.at_level(logging.WARNING):
        schema = learn_schema(transactions(), DataConfig())
    features = {c.name for c in schema.columns}
    assert "is_fraud" not in features and {"amount", "items", "channel"} <= features
    assert "column 'is_fraud' looks like a label" in caplog.text
    assert column_role(pl.Series("fraud_amount", [1.5, 2.5, 3.5])) == "feature"  # a measurement of many values


def test_N2_a_status_column_whose_values_read_as_states_of_health_is_a_label(caplog: pytest.LogCaptureFixture) -> None:
    """`status` (RUN/FAULT/MAINT) was one-hot encoded as a feature: the model read the answer."""
    frame = transactions().with_columns(
        status=pl.Series(np.random.default_rng(2).choice(["RUN", "RUN", "RUN", "FAULT", "MAINT"], 600))
    )
    with caplog.at_level(logging.WARNING):
        schema = learn_schema(frame.drop("is_fraud"), DataConfig())
    features = {c.name for c in schema.columns}
    assert "status" not in features and "channel" in features
    assert "values, such as 'FAULT', read as states of health" in caplog.text
    assert column_role(pl.Series("shift", ["day", "night"])) == "feature"
    assert column_role(pl.Series("code", [f"E{i}" for i in range(40)] + ["ERROR"])) == "feature"  # many values: a code


@pytest.mark.parametrize("option", ["ignore_columns", "id_columns", "features"])
def test_N3_an_unknown_column_name_in_any_option_is_refused_with_the_close_names(option: str) -> None:
    """`--ignore-columns is_frad` (a typo) was accepted with exit 0 and `is_fraud` stayed a feature."""
    with pytest.raises(
        SchemaError, match=rf"column 'is_frad' named in the config is missing .{option}.*Did you mean 'is_fraud'"
    ):
        learn_schema(transactions(), DataConfig(**{option: ["is_frad"]}))


def test_N3_the_cli_names_the_flag_and_the_close_name(tmp_path: Path) -> None:
    transactions().write_parquet(tmp_path / "tx.parquet")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("vad")), "train", str(tmp_path / "tx.parquet"), "--ignore-columns", "is_frad"]
        + ["--out", str(tmp_path / "models"), "--epochs", "1", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and not (tmp_path / "models").exists()
    assert "--ignore-columns" in done.stderr and "Did you mean 'is_fraud'?" in done.stderr


def test_N4_a_threshold_below_every_calibration_score_is_said_and_a_quantile_form_exists(
    sensor_model: Path, tmp_path: Path
) -> None:
    """`vad score --threshold 0.99` flagged 2,931 of 2,940 rows with exit 0 and no warning:
    `vad train --threshold` names a method, `vad score --threshold` takes a raw score."""
    vad, batch = str(Path(sys.executable).with_name("vad")), str(ROOT / "data" / "sensors" / "batch.parquet")
    typed = subprocess.run(
        [vad, "score", str(sensor_model), batch, "--threshold", "0.99", "--output", str(tmp_path / "a.parquet"), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert typed.returncode == 0, typed.stderr
    assert "threshold 0.99 lies below every calibration score" in typed.stderr and "--threshold-quantile" in typed.stderr
    assert json.loads(typed.stdout)["anomalies"] == json.loads(typed.stdout)["rows"]  # what the warning says

    quantile = subprocess.run(
        [vad, "score", str(sensor_model), batch, "--threshold-quantile", "0.99", "--output", str(tmp_path / "b.parquet")]
        + ["--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert quantile.returncode == 0, quantile.stderr
    scorer = Scorer.load(sensor_model)
    table = scorer.manifest.validation.score_percentiles
    assert table is not None and json.loads(quantile.stdout)["threshold"] == pytest.approx(
        table.values[table.levels.index(99.0)]
    )
    assert "lies below" not in quantile.stderr


def test_the_hour_clocks_go_back_is_named_as_daylight_saving_with_the_setting_not_a_merge() -> None:
    """Newcomer review N5: a DST fall-back hour was reported as duplicate readings, and the
    suggested `--duplicates last` dropped 240 real readings."""
    from pipeline.data.inputs import model_inputs

    times = [datetime(2026, 10, 25, 1, 30) + timedelta(minutes=30 * i) for i in range(4)]
    times = times[:3] + [datetime(2026, 10, 25, 2, 0), datetime(2026, 10, 25, 2, 30), datetime(2026, 10, 25, 3, 0)]
    frame = pl.DataFrame({"m": ["a"] * 6, "ts": times, "x": [1.0, 2, 3, 4, 5, 6]})
    naive = learn_schema(frame, DataConfig(mode="sensor", time_column="ts", entity_column="m"))
    with pytest.raises(SchemaError, match="clocks go back .daylight saving.*--time-zone Europe/Berlin") as refused:
        model_inputs(frame, naive, file="h.csv")
    assert "duplicates" not in str(refused.value)
    local = learn_schema(frame, DataConfig(mode="sensor", time_column="ts", entity_column="m", time_zone="Europe/Berlin"))
    inputs = model_inputs(frame, local, file="h.csv", windows="none")
    assert inputs.rows.height == 6 and inputs.rows["ts"].is_unique().all()  # both hours kept, in UTC
    assert inputs.rows["ts"].diff().drop_nulls().unique().to_list() == [timedelta(minutes=30)]

    spring = frame.with_columns(pl.col("ts").dt.offset_by("-210d"))  # 2026-03-29 02:00-02:59 never happens in Berlin
    with pytest.raises(SchemaError, match="drop the duplicate readings") as repeated:  # the skipped hour: no DST hint
        model_inputs(spring, naive, file="h.csv")
    assert "clocks go back" not in str(repeated.value)
    with pytest.raises(SchemaError, match=r"does not exist in Europe/Berlin.*row \d"):
        model_inputs(spring.unique("ts", keep="first", maintain_order=True), local, file="h.csv")


@pytest.mark.parametrize(
    ("text", "row", "hint"),
    [
        ("80,324", 5, "--decimal-comma"),
        ("degC", 0, "--skip-rows-after-header 1"),
        ("#N/A", 5, "--null-values '#N/A'"),
        ("12x7", 5, "Correct the value"),
    ],
)
def test_N11_N12_a_text_value_in_a_numeric_column_is_refused_with_the_reading_option_that_fixes_it(
    text: str, row: int, hint: str
) -> None:
    frame = pl.DataFrame({"x": [str(v) for v in np.arange(20.0)], "y": np.arange(20.0)})
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == row).then(pl.lit(text)).otherwise(pl.col("x")).alias("x"))
    schema = learn_schema(frame.with_columns(pl.col("x").cast(pl.Float64, strict=False).fill_null(0.0)), DataConfig())
    with pytest.raises(SchemaError, match=re.escape(hint)):
        coerce(frame, schema, "mine.csv")  # as scoring reads a batch
