"""The exported models outside Python: examples/node (onnxruntime-node, no Python) scores the
same rows as the Python runtime within 1e-5 relative, with the same flags, for a tabular and
a windowed sensor model; its embeddings (the scorer graph's μ, as Python reads them) and its
decoder-alone samples match too."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from common import DATA, ROOT

from pipeline.runtime import Scorer

NODE_DIR = ROOT / "examples" / "node"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node() -> str:
    """Node.js with the example's packages (`npm ci`; onnxruntime-node's CPU build ships in
    its package, so ONNXRUNTIME_NODE_INSTALL=skip downloads nothing more)."""
    executable = shutil.which("node")
    if executable is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed (the parity test needs them; CI has them)")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            timeout=600,
            env={**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"},
            capture_output=True,
        )
    return executable


def run_node(node: str, *args: str | Path) -> str:
    result = subprocess.run([node, "cli.mjs", *map(str, args)], cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_same_scores(python: pl.DataFrame, node: pl.DataFrame, threshold: float) -> None:
    np.testing.assert_allclose(node["score"].to_numpy(), python["score"].to_numpy(), rtol=1e-5)
    assert node["is_anomaly"].to_list() == python["is_anomaly"].to_list()
    assert python["is_anomaly"].any() and not python["is_anomaly"].all()  # both kinds of flag were compared
    assert threshold > 0


def test_tabular_scores_match_python(node: str, tabular_model: Path, tmp_path: Path) -> None:
    rows = pl.read_csv(DATA / "tabular" / "batch.csv").with_columns(  # repairs too: a gap, an unseen line
        temperature=pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("temperature")),
        line=pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("L9")).otherwise(pl.col("line")),
    )
    rows.write_csv(tmp_path / "rows.csv")
    scorer = Scorer.load(tabular_model)
    python = scorer.score(rows)
    from_node = pl.read_csv(io.StringIO(run_node(node, "score", tabular_model, tmp_path / "rows.csv")))
    assert from_node["batch_id"].to_list() == python["batch_id"].to_list()
    assert_same_scores(python, from_node, scorer.threshold)
    assert python["is_anomaly"][4] and python["score"][4] <= scorer.threshold  # flagged for its new line alone


def test_sensor_windows_scores_match_python(node: str, sensor_model: Path, tmp_path: Path) -> None:
    rows = pl.read_parquet(DATA / "sensors" / "batch.parquet").sample(fraction=1.0, shuffle=True, seed=5)
    rows.write_csv(tmp_path / "rows.csv")  # shuffled: both sides must sort by machine, then time
    scorer = Scorer.load(sensor_model)
    python = scorer.score(rows)
    from_node = pl.read_csv(io.StringIO(run_node(node, "score", sensor_model, tmp_path / "rows.csv")), try_parse_dates=True)
    assert from_node["machine"].to_list() == python["machine"].to_list()
    assert from_node["timestamp"].to_list() == python["timestamp"].to_list()
    assert_same_scores(python, from_node, scorer.threshold)
    assert from_node["alarm"].to_list() == python["alarm"].to_list() and python["alarm"].any()
    assert from_node["judged"].to_list() == python["judged"].to_list() and not python["judged"].all()


def test_a_stream_cut_across_calls_continues_in_node_as_in_python(node: str, sensor_model: Path, tmp_path: Path) -> None:
    """Issue 45: the demo batch sent to Node in three calls, the stream state kept in a file
    between them, gives what Python gives the whole batch at once: every row's score, flag,
    alarm and judgement (not only the first call's rows)."""
    rows = pl.read_parquet(DATA / "sensors" / "batch.parquet").sort("machine", "timestamp")
    scorer = Scorer.load(sensor_model)
    python = scorer.score(rows)
    times = rows["timestamp"].sort()
    cuts = [times[0], times[len(times) // 3], times[2 * len(times) // 3]]
    outputs = []
    for i, start in enumerate(cuts):
        part = rows.filter(pl.col("timestamp") >= start)
        part = part.filter(pl.col("timestamp") < cuts[i + 1]) if i + 1 < len(cuts) else part
        part.write_csv(tmp_path / f"part-{i}.csv")
        text = run_node(node, "score", sensor_model, tmp_path / f"part-{i}.csv", tmp_path / "state.json")
        outputs.append(pl.read_csv(io.StringIO(text), try_parse_dates=True))
    from_node = pl.concat(outputs).sort("machine", "timestamp")
    assert from_node["timestamp"].to_list() == python["timestamp"].to_list()
    assert_same_scores(python, from_node, scorer.threshold)
    for column in ("alarm", "judged"):
        assert from_node[column].to_list() == python[column].to_list(), column
    padded = 4 * (scorer.schema.window.length - 1)  # only each machine's very first rows, not each call's
    assert (~from_node["judged"]).sum() == padded


def test_embeddings_from_the_scorer_graph_match_python(node: str, tabular_model: Path) -> None:
    scorer = Scorer.load(tabular_model)
    python = scorer.encode(pl.read_csv(DATA / "tabular" / "batch.csv"))
    lines = [
        json.loads(line) for line in run_node(node, "embed", tabular_model, DATA / "tabular" / "batch.csv").splitlines()
    ]
    from_node = np.asarray([np.ravel(line["mu"]) for line in lines])
    np.testing.assert_allclose(from_node, python.drop("batch_id").to_numpy(), rtol=1e-5, atol=1e-6)


def test_decoder_alone_samples_like_python(node: str, tabular_model: Path) -> None:
    scorer = Scorer.load(tabular_model)
    lines = [json.loads(line) for line in run_node(node, "sample", tabular_model, 64, 7).splitlines()]
    members, latent = scorer.manifest.model["members"], scorer.manifest.model["latent"]
    z = np.asarray([line["z"] for line in lines], dtype=np.float32).reshape(len(lines), members, latent)
    mean = scorer.session("decoder").run(["mean"], {"z": z})[0]
    picked = mean[np.arange(len(lines)), [line["member"] for line in lines]]
    raw = scorer.manifest.scaler.build().inverse(picked)  # the quantile map undone, as Node undoes it
    np.testing.assert_allclose(np.asarray([line["values"] for line in lines]), raw, rtol=1e-5, atol=1e-5)


def refused_in_node(node: str, model: Path) -> subprocess.CompletedProcess:
    """`node cli.mjs score` on the bundled table with a model the example should refuse."""
    return subprocess.run(
        [node, "cli.mjs", "score", str(model), str(DATA / "tabular" / "batch.csv")],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_tampered_graph_is_refused_in_node_too(node: str, tabular_model: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(tabular_model, tmp_path / "model"))
    with (model / "scorer.onnx").open("ab") as handle:
        handle.write(b"\0")
    result = refused_in_node(node, model)
    assert result.returncode == 2 and "sha256" in result.stderr


def test_p33_a_persistence_rule_flags_the_same_rows_in_node(node: str, sensor_model: Path, tmp_path: Path) -> None:
    """P33: Node flagged every row above the threshold and ignored the model's k-of-n rule, so
    a 3-of-5 sensor model flagged differently in Node than in Python."""
    from pipeline.core.config import Persistence, ThresholdConfig
    from pipeline.training.rethreshold import refit_threshold

    folder = Path(shutil.copytree(sensor_model.parent, tmp_path / "model", symlinks=True))
    batch = DATA / "sensors" / "batch.parquet"
    refit = refit_threshold(
        folder, batch, ThresholdConfig(method="quantile", quantile=0.9, persistence=Persistence(k=3, n=5))
    )
    rows = pl.read_parquet(batch)
    rows.write_csv(tmp_path / "rows.csv")
    scorer = Scorer.load(refit.version_dir)
    python = scorer.score(rows)
    assert (python["is_anomaly"] != (python["score"] > scorer.threshold)).any()  # the rule changed some flags
    from_node = pl.read_csv(io.StringIO(run_node(node, "score", refit.version_dir, tmp_path / "rows.csv")))
    assert_same_scores(python, from_node, scorer.threshold)


@pytest.mark.parametrize("value", [1e300, None], ids=["edited", "not-finite"])
def test_p33_an_edited_manifest_threshold_is_refused_in_node(
    node: str, tabular_model: Path, tmp_path: Path, value: float | None
) -> None:
    """P33: Node took `threshold.value` from the manifest unchecked; the scorer graph's metadata
    names the threshold it was exported with, and Python refuses a manifest that differs."""
    model = Path(shutil.copytree(tabular_model, tmp_path / "model"))
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["threshold"]["value"] = value
    (model / "manifest.json").write_text(json.dumps(manifest))
    result = refused_in_node(node, model)
    assert result.returncode == 2 and ("manifest was edited" in result.stderr or "not a finite" in result.stderr)
