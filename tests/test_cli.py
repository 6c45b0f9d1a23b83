"""The `vad` command: happy paths, and one test per bad input. Every error is one line on
stderr naming what and where, exit status 2, and no output file left behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "data" / "tabular" / "batch.csv"


def vad(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def model_copy(tabular_model: Path, tmp_path: Path) -> Path:
    """A private copy of a trained version folder, safe to damage."""
    return Path(shutil.copytree(tabular_model, tmp_path / "model"))


def test_help_everywhere() -> None:
    for command in ["", "train", "score", "threshold", "inspect", "sample", "encode"]:
        result = vad(*([command] if command else []), "--help")
        assert result.returncode == 0 and "Usage" in result.stdout


def test_shell_completion_completes_commands_and_their_options() -> None:
    """`vad --install-completion` (bash, zsh, fish) installs a script that asks `vad` itself
    for the words: the commands, then each command's options."""
    executable = Path(sys.executable).parent / "vad"  # the console script: completion keys on its name
    # The shell named, not detected from the parent process (under make it is sh, which typer does not complete).
    named = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    script = subprocess.run([executable, "--show-completion", "bash"], capture_output=True, text=True, env=named)
    assert script.returncode == 0 and "_VAD_COMPLETE=complete_bash" in script.stdout, script.stderr

    def words(line: str) -> list[str]:
        env = {**os.environ, "_VAD_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(line.split()) - 1)}
        return subprocess.run([executable], capture_output=True, text=True, env=env, check=True).stdout.split()

    assert words("vad sc") == ["score"]
    assert "--chunk-rows" in words("vad score --ch") and words("vad th") == ["threshold"]


def test_train_score_inspect_sample_encode(tmp_path: Path) -> None:
    trained = vad(
        "train",
        ROOT / "data" / "tabular" / "history.csv",
        "--config",
        ROOT / "data" / "tabular.toml",
        "--out",
        tmp_path / "exported",
        "--epochs",
        "3",
        "--no-progress",
    )
    assert trained.returncode == 0, trained.stderr
    model = tmp_path / "exported" / "demo-tabular"
    out = tmp_path / "scores.parquet"
    scored = vad("score", model, TABLE, "--output", out)
    assert scored.returncode == 0, scored.stderr
    assert "top anomalies" in scored.stdout and str(out) in scored.stdout.replace("\n", "")
    frame = pl.read_parquet(out)
    assert frame.height == 1000 and {"batch_id", "score", "is_anomaly", "top1_feature", "top1_share"} <= set(frame.columns)
    inspected = vad("inspect", model, "--json")
    assert json.loads(inspected.stdout)["name"] == "demo-tabular"
    assert "CPUExecutionProvider" in vad("inspect", model).stdout
    assert vad("sample", model, "-n", "5", "--output", tmp_path / "s.csv").returncode == 0
    assert pl.read_csv(tmp_path / "s.csv").height == 5
    assert vad("encode", model, TABLE, "--output", tmp_path / "z.parquet").returncode == 0
    assert pl.read_parquet(tmp_path / "z.parquet").height == 1000


def test_every_command_that_prints_a_result_has_json(tmp_path: Path) -> None:
    """train, score, threshold and inspect: `--json` prints one JSON object and nothing else on
    stdout (warnings and progress stay on stderr), with what the tables show."""
    trained = vad(
        "train",
        ROOT / "data" / "tabular" / "history.csv",
        "--config",
        ROOT / "data" / "tabular.toml",
        "--out",
        tmp_path / "exported",
        "--epochs",
        "3",
        "--no-progress",
        "--json",
    )
    assert trained.returncode == 0, trained.stderr
    fit = json.loads(trained.stdout)
    assert fit["model"] == "demo-tabular" and Path(fit["version_dir"]).name == "1" and fit["epochs_run"] == 3
    scored = json.loads(
        vad("score", tmp_path / "exported" / "demo-tabular", TABLE, "--output", tmp_path / "scores.parquet", "--json").stdout
    )
    assert scored["rows"] == 1000 and scored["threshold"] == fit["threshold"]["value"]
    assert scored["anomalies"] == int(pl.read_parquet(tmp_path / "scores.parquet")["is_anomaly"].sum())
    assert len(scored["top"]) == 10 and scored["top"][0]["score"] >= scored["top"][-1]["score"]
    refit = json.loads(vad("threshold", tmp_path / "exported" / "demo-tabular", TABLE, "--target", "0.9", "--json").stdout)
    assert Path(refit["version_dir"]).name == "2" and refit["flagged"] == pytest.approx(0.1, abs=0.01)
    assert json.loads(vad("inspect", refit["version_dir"], "--json").stdout)["lineage"]


def test_environment_errors_are_one_line_too(model_copy: Path, tmp_path: Path) -> None:
    """A full disk (injected: ENOSPC while the scores are written): one `error:` line and exit
    status 2, no traceback, nothing left behind."""
    import os

    full = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "score",
            str(model_copy),
            str(TABLE),
            "--output",
            str(tmp_path / "out" / "scores.parquet"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "VAD_FULL_DISK_AT": "write"},
    )
    assert_one_line_error(full, "No space left on device")
    assert list((tmp_path / "out").iterdir()) == []


def test_missing_column(model_copy: Path, tmp_path: Path) -> None:
    bad = tmp_path / "no_energy.csv"
    pl.read_csv(TABLE).drop("energy_kwh").write_csv(bad)
    result = vad("score", model_copy, bad, "--output", tmp_path / "out.parquet")
    assert_one_line_error(result, "column 'energy_kwh' is missing", "no_energy.csv")
    assert not (tmp_path / "out.parquet").exists()


def test_nan_under_error_policy(tmp_path: Path, sensor_model: Path) -> None:
    frame = pl.read_parquet(ROOT / "data" / "sensors" / "batch.parquet").filter(pl.col("machine") == "press-02")
    bad = tmp_path / "gap.parquet"  # one machine: its only entity fails, so the batch does
    frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 41).then(None).otherwise(pl.col("load")).alias("load")
    ).write_parquet(bad)
    result = vad("score", sensor_model, bad, "--output", tmp_path / "out.parquet")
    assert_one_line_error(result, "missing value", "gap.parquet", "column 'load'", "row 42")
    assert not list(tmp_path.glob("*out.parquet*"))


def test_empty_file(model_copy: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = vad("score", model_copy, empty, "--output", tmp_path / "out.parquet")
    assert_one_line_error(result, "empty.csv")
    assert not list(tmp_path.glob("*out.parquet*"))


def test_header_only_file(model_copy: Path, tmp_path: Path) -> None:
    header = tmp_path / "header.csv"
    header.write_text(TABLE.read_text().splitlines()[0] + "\n")
    result = vad("score", model_copy, header, "--output", tmp_path / "out.parquet")
    assert_one_line_error(result, "header.csv", "no data rows")
    assert not list(tmp_path.glob("*out.parquet*"))


def test_wrong_dtype(model_copy: Path, tmp_path: Path) -> None:
    text = TABLE.read_text().splitlines()
    header = text[0].split(",")
    column = header.index("temperature")
    row = text[7].split(",")
    row[column] = "hot"
    text[7] = ",".join(row)
    bad = tmp_path / "typo.csv"
    bad.write_text("\n".join(text) + "\n")
    result = vad("score", model_copy, bad, "--output", tmp_path / "out.parquet")
    assert_one_line_error(result, "column 'temperature' must be numeric", "'hot'", "typo.csv", "row 7")
    assert not list(tmp_path.glob("*out.parquet*"))


def test_unknown_format(model_copy: Path, tmp_path: Path) -> None:
    bad = tmp_path / "batch.xlsx"
    bad.write_bytes(b"PK\x03\x04")
    result = vad("score", model_copy, bad, "--output", tmp_path / "out.parquet")
    assert_one_line_error(result, "unsupported format '.xlsx'", "batch.xlsx")


def test_corrupted_parquet(model_copy: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pl.read_csv(TABLE).write_parquet(good)
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    result = vad("score", model_copy, bad, "--output", tmp_path / "out.parquet")
    assert_one_line_error(result, "broken.parquet")
    assert not list(tmp_path.glob("*out.parquet*"))


def test_model_folder_missing_a_file(model_copy: Path, tmp_path: Path) -> None:
    (model_copy / "scorer.onnx").unlink()
    result = vad("score", model_copy, TABLE, "--output", tmp_path / "out.parquet")
    assert_one_line_error(result, "missing 'scorer.onnx'", str(model_copy))
    assert not (tmp_path / "out.parquet").exists()


def test_sha256_mismatch(model_copy: Path, tmp_path: Path) -> None:
    with (model_copy / "scorer.onnx").open("ab") as handle:
        handle.write(b"\0")
    result = vad("score", model_copy, TABLE, "--output", tmp_path / "out.parquet")
    assert_one_line_error(result, "scorer.onnx", "sha256")
    assert not (tmp_path / "out.parquet").exists()


def test_newer_manifest_schema_is_refused(model_copy: Path) -> None:
    manifest = json.loads((model_copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(vad("inspect", model_copy), "schema_version 99")


def test_bad_config_value(tmp_path: Path) -> None:
    result = vad("train", TABLE, "--threshold", "median", "--out", tmp_path)
    assert_one_line_error(result, "threshold.method")
    assert not any(tmp_path.iterdir())


def test_training_error_names_the_file_among_several(tmp_path: Path) -> None:
    folder = tmp_path / "history"
    folder.mkdir()
    frame = pl.read_csv(ROOT / "data" / "tabular" / "history.csv")
    frame.head(2500).write_csv(folder / "a.csv")
    frame.tail(2500).with_columns(
        pl.when(pl.int_range(pl.len()) == 9).then(None).otherwise(pl.col("pressure")).alias("pressure")
    ).write_csv(folder / "b.csv")
    result = vad(
        "train",
        folder,
        "--id-columns",
        "batch_id",
        "--label-column",
        "label",
        "--out",
        tmp_path / "out",
        "--epochs",
        "1",
        "--no-progress",
    )
    assert_one_line_error(result, "missing value", "b.csv", "column 'pressure'", "row 10")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.onnx"))


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["sample", "{model}", "-n", "0"], "'-n'"),
        (["sample", "{model}", "-n", "-1"], "'-n'"),
        (["score", "{model}", str(TABLE), "--chunk-rows", "0"], "'--chunk-rows'"),
    ],
)
def test_counts_below_one_are_usage_errors_not_crashes(tabular_model: Path, args: list[str], option: str) -> None:
    result = vad(*[a.replace("{model}", str(tabular_model)) for a in args])
    assert result.returncode == 2 and option in result.stderr and "Traceback" not in result.stderr


def test_version_help_and_providers_say_what_is_true(tabular_model: Path) -> None:
    assert vad("--version").stdout.strip() == "vad 0.1.0"
    helped = " ".join(re.sub("[│╭╮╰╯─]", " ", vad("train", "--help").stdout).split())  # text across wrapped lines
    assert "TOML config with sections data," in helped and ", , ," not in helped  # no markup eaten
    shown = " ".join(vad("inspect", str(tabular_model)).stdout.split())
    usable = "CUDAExecutionProvider" if Path("/dev/nvidiactl").exists() else "CPUExecutionProvider"
    assert f"{usable} usable here" in shown  # onnxruntime-gpu lists CUDA even where no GPU is


@pytest.mark.parametrize(
    ("option", "name"),
    [(["--window", "5"], "window"), (["--max-gap", "PT5M"], "max_gap"), (["--entity-column", "site"], "entity_column")],
)
def test_series_options_on_a_table_are_refused_with_the_reason(tmp_path: Path, option: list[str], name: str) -> None:
    """They were accepted and silently did nothing: a table's rows are scored one by one."""
    result = vad("train", str(TABLE), "--out", str(tmp_path), *option)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"`{name}` applies to sensor series" in result.stderr and not any(tmp_path.iterdir())


def test_N18_an_error_under_json_is_one_json_object_on_stdout_too(tmp_path: Path) -> None:
    """`vad score exported/nosuch new.csv --json` left stdout empty: a script reading the JSON
    got nothing to parse."""
    result = vad("score", tmp_path / "nosuch", TABLE, "--json")
    assert_one_line_error(result, "does not exist")
    assert json.loads(result.stdout) == {
        "error": f"model folder '{tmp_path / 'nosuch'}' does not exist.",
        "kind": "ModelArtifactError",
    }
    assert vad("score", tmp_path / "nosuch", TABLE).stdout == ""  # without --json, stdout stays empty


def test_N19_training_writes_no_progress_bar_into_a_pipe(tmp_path: Path) -> None:
    """tqdm wrote 1.5 KB of bars for 2 epochs into a pipe or a log; on a terminal they stay."""
    config = ROOT / "data" / "tabular.toml"
    result = vad("train", ROOT / "data" / "tabular" / "history.csv", "--config", config, "--epochs", "2", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epoch" not in result.stderr and "\r" not in result.stderr


def test_N22_inspect_reads_as_a_table_not_as_json_or_python_reprs(sensor_model: Path) -> None:
    """`vad inspect` printed `107.6632 (quantile {'quantile': 0.99})`, a stray quote in the
    training data's hash and validation JSON cut with `…`."""
    shown = vad("inspect", sensor_model)
    assert shown.returncode == 0, shown.stderr
    assert not re.search(r"[{}\"]|(?<![a-z])'", shown.stdout), shown.stdout  # a word's apostrophe is no repr
    assert re.search(r"training data\s+│ [\d,]+ rows, sha256 [0-9a-f]{12}…", shown.stdout)
    assert re.search(r"threshold\s+│ [\d.]+ \((quantile|pot|contamination)", shown.stdout)


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--missing", "imput"], "--missing (config `data.missing`) is invalid"),
        (["--threshold", "quantil"], "--threshold (config `threshold.method`) is invalid"),
        (["--window", "0"], "--window (config `data.window.length`) is invalid"),
    ],
)
def test_N25_a_bad_flag_is_named_as_the_flag_that_was_typed(tmp_path: Path, flags: list[str], said: str) -> None:
    """`--missing imput` was refused as "config `data.missing` is invalid"; hints said
    `missing='impute'` where the command takes `--missing impute`."""
    result = vad("train", ROOT / "data" / "tabular" / "history.csv", *flags, "--out", tmp_path)
    assert_one_line_error(result, said)
    assert not any(tmp_path.iterdir())


def test_N23_the_top_anomalies_table_never_cuts_a_key_at_80_columns(tabular_model: Path, tmp_path: Path) -> None:
    """Keys were cut to `TX0002…` and `historian_…` at 80 columns: the row could not be found."""
    long_ids = pl.read_csv(TABLE).with_columns(pl.format("BATCH-{}-2026-12-07-line-0042", "batch_id").alias("batch_id"))
    long_ids.write_csv(tmp_path / "batch.csv")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "score",
            tabular_model,
            tmp_path / "batch.csv",
            "--output",
            tmp_path / "s.csv",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert result.returncode == 0, result.stderr
    shown = re.findall(r"BATCH-\d+-2026-12-07-line-0042", result.stdout)
    assert len(shown) == 10 and "…" not in result.stdout  # nothing cut: the explanation folds instead
