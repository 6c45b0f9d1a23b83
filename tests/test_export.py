"""Exported version folders: files, checker, parity with PyTorch, manifest, versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from pipeline.artifact.contract import GRAPH_IO
from pipeline.artifact.manifest import SCHEMA_VERSION, read_manifest, resolve_model_dir
from pipeline.core.digest import sha256_file
from pipeline.core.errors import ModelArtifactError
from pipeline.training.export import check_parity

GRAPHS = ["encoder", "decoder", "scorer", "scorer_sampled"]


def test_version_folder_holds_every_artifact(sensor_model: Path) -> None:
    names = {p.name for p in sensor_model.iterdir()}
    assert {f"{g}.onnx" for g in GRAPHS} | {"manifest.json", "checkpoint.pt", "history.json"} <= names
    assert not any(n.endswith(".onnx.data") for n in names)  # weights live inside each graph


@pytest.mark.parametrize("graph", GRAPHS)
def test_graphs_pass_full_checker_and_describe_themselves(sensor_model: Path, graph: str) -> None:
    proto = onnx.load(str(sensor_model / f"{graph}.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == read_manifest(sensor_model).opset
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model_name"] == "demo-sensors" and meta["graph"] == graph
    assert meta["score_direction"] == "higher is more anomalous"
    assert len(json.loads(meta["input_names"])) == 72
    inputs = [i.name for i in proto.graph.input]
    assert inputs == GRAPH_IO[graph][0]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis


def test_onnx_matches_pytorch_within_1e5(sensor_fit) -> None:
    data, result = sensor_fit.data, sensor_fit.calibrated.result
    manifest = read_manifest(sensor_fit.version_dir)
    errors = check_parity(
        sensor_fit.version_dir,
        result.model,
        result.scaler,
        data.x[:300],
        seed=7,
        baseline=np.asarray(manifest.feature_baseline),
        sources=manifest.feature_schema.input_sources,
    )
    assert max(errors.values()) <= 1e-5
    assert set(errors) >= {
        "scorer.score",
        "scorer.feature_nll",
        "scorer.mu",
        "scorer.top_share",
        "encoder.mu",
        "decoder.mean",
        "scorer_sampled.log_weight",
    }


def test_manifest_carries_what_scoring_needs(sensor_model: Path) -> None:
    manifest = read_manifest(sensor_model)
    assert manifest.schema_version == SCHEMA_VERSION
    assert manifest.feature_schema.window.length == 12
    assert len(manifest.scaler.mean) == len(manifest.input_names) == len(manifest.feature_baseline) == 72
    assert manifest.threshold.method == "pot" and np.isfinite(manifest.threshold.value)
    assert manifest.training["model"]["scaling"] == "standard"  # `auto`, settled for sensor windows, as trained
    assert manifest.scaler.knots is None  # no rank-Gauss map in the graph
    assert manifest.training_data["rows"] > 5000 and len(manifest.training_data["sha256"]) == 64
    assert manifest.validation.parity_max_relative_error is not None
    assert manifest.validation.parity_max_relative_error <= 1e-5
    assert {"torch", "onnx", "polars"} <= set(manifest.library_versions)
    for name, digest in manifest.files.items():
        assert sha256_file(sensor_model / name) == digest


def test_versions_are_immutable_and_latest_moves(tabular_fit, exported_root: Path) -> None:
    from pipeline.training.export import Destination, FittedModel, Provenance, export_model
    from pipeline.training.fit import validation_record

    first = tabular_fit.version_dir
    before = {p.name: sha256_file(p) for p in first.iterdir()}
    calibrated = tabular_fit.calibrated
    fitted = FittedModel(calibrated.result, tabular_fit.data.schema, calibrated.threshold, calibrated.feature_baseline)
    second = export_model(
        fitted,
        Provenance(training={}, training_data={}, validation=validation_record(calibrated)),
        Destination("demo-tabular", exported_root),
        tabular_fit.data.x[:50],
    )
    assert second.name == str(int(first.name) + 1)
    assert resolve_model_dir(first.parent) == second
    assert {p.name: sha256_file(p) for p in first.iterdir()} == before
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_model_without_its_validation_quantiles_is_refused(tabular_fit, exported_root: Path, tmp_path: Path) -> None:
    """`validation={}` once exported a model whose every alert was critical: alerts took the
    threshold itself as the normal score. The typed record refuses it at export, and at load
    a manifest that lost the quantiles."""
    from pydantic import ValidationError

    from pipeline.training.export import Destination, FittedModel, Provenance, export_model

    calibrated = tabular_fit.calibrated
    versions = sorted(p.name for p in (exported_root / "demo-tabular").iterdir())
    fitted = FittedModel(calibrated.result, tabular_fit.data.schema, calibrated.threshold, calibrated.feature_baseline)
    with pytest.raises(ValidationError, match="score_quantiles"):
        export_model(
            fitted,
            Provenance(training={}, training_data={}, validation={}),
            Destination("demo-tabular", exported_root),
            tabular_fit.data.x[:50],
        )
    assert sorted(p.name for p in (exported_root / "demo-tabular").iterdir()) == versions  # nothing published

    edited = tmp_path / "edited"
    shutil.copytree(tabular_fit.version_dir, edited)
    raw = json.loads((edited / "manifest.json").read_text())
    del raw["validation"]["score_quantiles"]["0.5"]
    (edited / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelArtifactError, match=r"validation.score_quantiles.*median"):
        read_manifest(edited)


def test_parity_mismatch_fails_the_export(sensor_fit) -> None:
    import copy

    import torch

    from pipeline.core.errors import ExportParityError

    result = sensor_fit.calibrated.result
    drifted = copy.deepcopy(result.model)
    with torch.no_grad():
        drifted.decoder[0].bias.add_(0.01)  # graphs on disk no longer match this model
    with pytest.raises(ExportParityError, match="differs from PyTorch"):
        check_parity(sensor_fit.version_dir, drifted, result.scaler, sensor_fit.data.x[:64])


@pytest.mark.slow
def test_heavy_tailed_round_off_passes_the_parity_gate(shared_data: Path, tmp_path: Path) -> None:
    """34_smtp (3 heavy-tailed columns) at the defaults, split as bench/quality.py splits it: on
    its own rows onnxruntime's and PyTorch's float32 KL differ by more than the plain tolerance,
    yet each is as close to the float64 value as the other, so the export must stand (it was
    refused). β 3 and trim 0.05 are the model that showed it; at the defaults for 3 inputs (β 1,
    trim 0.10) the two KLs happen to agree within the plain tolerance, and bench/quality.py
    exports that one. A wrong graph still fails: test_parity_mismatch_fails_the_export."""
    from sklearn.model_selection import train_test_split

    from pipeline.training.detector import VAEDetector
    from pipeline.training.export import PARITY_TOLERANCE

    arrays = np.load(shared_data / "adbench" / "34_smtp.npz")
    x_train, x_test = train_test_split(arrays["X"].astype(np.float32), test_size=0.3, stratify=arrays["y"], random_state=0)
    detector = VAEDetector(random_state=0, beta=3.0, trim_fraction=0.05).fit(x_train[:20_000])
    version = detector.export(tmp_path, "smtp")
    errors = check_parity(
        version,
        detector.model_,
        detector.scaler_,
        np.concatenate([x_train[:192], x_test[:64]]),
        baseline=detector.feature_baseline_,
        sources=detector.schema_.input_sources,
    )
    assert max(errors.values()) > PARITY_TOLERANCE  # the case the plain tolerance refused


@pytest.mark.slow  # the dynamo exporter takes about 10 s
def test_both_torch_exporters_write_graphs_that_score_alike(sensor_fit, tmp_path: Path) -> None:
    """The TorchScript exporter writes the graphs (25× faster); the dynamo one stays ready for
    the day it leaves torch. Every graph, from each, gives the same outputs in onnxruntime,
    a batch size neither was traced with and the samples axis included."""
    import onnxruntime as ort

    from pipeline.model.graphs import build_graphs
    from pipeline.training.export import _example_inputs, _export_graph

    result = sensor_fit.calibrated.result
    modules = build_graphs(result.model.cpu(), result.scaler)
    rng = np.random.default_rng(3)
    for name, module in modules.items():
        feeds = {
            n: rng.standard_normal((11, *([5] if i else []), *a.shape[(2 if i else 1) :])).astype(np.float32)
            for i, (n, a) in enumerate(zip(GRAPH_IO[name][0], _example_inputs(name, result.model), strict=True))
        }
        outputs = []
        for exporter in ("torchscript", "dynamo"):
            path = tmp_path / f"{name}-{exporter}.onnx"
            _export_graph(module, name, result.model, path, {"graph": name}, exporter=exporter)
            outputs.append(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds))
        for a, b in zip(*outputs, strict=True):
            assert a.shape == b.shape and a.shape[0] == 11
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
