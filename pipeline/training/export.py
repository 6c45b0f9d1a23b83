"""Export a trained VAE to ONNX: encoder, decoder, a fused scorer and a sampled scorer.

The version is built in a temporary folder, checked (onnx.checker, shape inference, parity
with PyTorch) and only then renamed into place; `latest` is moved last. Versions are
never overwritten."""

from __future__ import annotations

import copy
import json
import logging
import platform
import shutil
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.artifact.contract import DECODER, ENCODER, GRAPH_IO, SCORER, SCORER_INT8, SCORER_SAMPLED
from pipeline.artifact.drift import DriftReference
from pipeline.artifact.manifest import MODEL_NAME, Manifest, ScalerSpec, new_staging, publish_version
from pipeline.artifact.threshold import Int8Drift, Threshold, ValidationRecord
from pipeline.core.errors import ExportParityError, ModelArtifactError, PipelineError
from pipeline.core.faults import crash_point
from pipeline.data.scaling import Scaler
from pipeline.data.schema import FeatureSchema
from pipeline.model.graphs import build_graphs
from pipeline.model.train import TrainResult
from pipeline.model.vae import VAE
from pipeline.training.graph_metadata import stamp_digest
from pipeline.training.quantize import quantize_scorer, score_drift

OPSET = 20
PARITY_TOLERANCE = 1e-5
# Past PARITY_TOLERANCE, a difference is round-off when onnxruntime is no further from the
# float64 evaluation of the same graph than this many times PyTorch's own float32 result is.
# Heavy-tailed inputs (34_smtp: 3 columns, 20,000 rows) put the two float32 KLs 1.2e-5 apart
# while each was about 1.4e-5 from the float64 value: round-off in both, a bug in neither.
ROUNDOFF_FACTOR = 4.0
# Which torch exporter writes the graphs. The TorchScript one (torch.jit.trace) exports the four
# graphs of a default model in about 0.4 s, the dynamo one (torch.export) in about 10 s, to
# graphs whose outputs were identical in onnxruntime (bench/NOTES.md, 2026-11-27, issue 19).
# These graphs are plain tensor code with no data-dependent control flow, which tracing is
# exact for; the parity gate checks every export either way. `dynamo` stays selectable for
# the day the TorchScript exporter leaves torch, and a test keeps it working.
Exporter = Literal["torchscript", "dynamo"]
EXPORTER: Exporter = "torchscript"


def _example_inputs(name: str, vae: VAE) -> tuple[torch.Tensor, ...]:
    n, latent = vae.shape.n_inputs, vae.shape.latent
    if name == DECODER:
        return (torch.zeros(3, vae.shape.members, latent),)
    if name == SCORER_SAMPLED:
        return torch.zeros(3, n), torch.zeros(3, 2, latent)
    return (torch.zeros(3, n),)


def _export_graph(
    module: nn.Module, name: str, vae: VAE, path: Path, metadata_props: dict[str, str], exporter: Exporter
) -> None:
    """Export with a dynamic batch axis (and sample axis), weights inside the one file."""
    inputs, outputs = GRAPH_IO[name]
    module.eval()
    with warnings.catch_warnings():  # the exporters' own chatter, not actionable here
        warnings.simplefilter("ignore", (FutureWarning, UserWarning, DeprecationWarning))
        # The tracer warns where a parameter's shape picks a branch: shapes are fixed per model.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if exporter == "torchscript":
            axes = {
                inputs[0]: {0: "batch"},
                **({inputs[1]: {0: "batch", 1: "samples"}} if name == SCORER_SAMPLED else {}),
                **{output: {0: "batch"} for output in outputs},
            }
            torch.onnx.export(
                module,
                _example_inputs(name, vae),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                verbose=False,
            )
        else:
            batch, samples = torch.export.Dim("batch"), torch.export.Dim("samples")
            shapes = ({0: batch}, {0: batch, 1: samples}) if name == SCORER_SAMPLED else ({0: batch},)
            # It warns once per run about torchvision ops it cannot register: not ours.
            logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
            # external_data=False: one self-contained file per graph is simpler to checksum, ship
            # and embed than a .onnx plus a side .onnx.data file.
            torch.onnx.export(
                module,
                _example_inputs(name, vae),
                str(path),
                dynamo=True,
                opset_version=OPSET,
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=shapes,
                external_data=False,
                verbose=False,
            )
    _stamp_and_check(path, metadata_props)


def _stamp_and_check(path: Path, metadata_props: dict[str, str]) -> None:
    """Write the metadata into the exported graph, check it fully and save it with its shapes inferred."""
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata_props.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = metadata_props.get("description", "")
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(onnx.shape_inference.infer_shapes(proto, strict_mode=True), str(path))


def check_parity(  # noqa: PLR0913 - the probe's settings, keywords with defaults
    folder: Path,
    vae: VAE,
    scaler: Scaler,
    probe_raw: np.ndarray,
    seed: int = 0,
    baseline: np.ndarray | None = None,
    sources: list[str] | None = None,
) -> dict[str, float]:
    """Run every graph in onnxruntime and in PyTorch on a probe batch; fail on a real mismatch.

    Error per output is max|onnx − torch| / max(max|torch|, 1e-6) (max-norm relative). Above
    PARITY_TOLERANCE the same graph is evaluated in float64, and the export fails only when
    onnxruntime is more than ROUNDOFF_FACTOR times further from it than PyTorch's own float32
    result: two float32 evaluations of an ill-conditioned sum may differ by more than the
    tolerance while both are as right as float32 allows, but a wrong graph is far from both.
    Integer outputs (`top_index`) are left out: equal shares may rank in either order, and
    `top_share` checks the values they select."""
    rng = np.random.default_rng(seed)
    probe_raw = probe_raw.astype(np.float32)
    probe_scaled = scaler.transform(probe_raw)
    feeds = {
        ENCODER: (probe_scaled,),
        DECODER: (rng.standard_normal((len(probe_raw), vae.shape.members, vae.shape.latent)).astype(np.float32),),
        SCORER: (probe_raw,),
        SCORER_SAMPLED: (probe_raw, rng.standard_normal((len(probe_raw), 4, vae.shape.latent)).astype(np.float32)),
    }
    errors: dict[str, float] = {}
    modules = build_graphs(vae.cpu(), scaler, baseline, sources)
    for name, args in feeds.items():
        session = ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        got = session.run(None, dict(zip(GRAPH_IO[name][0], args, strict=True)))
        errors |= _graph_errors(name, modules[name], args, got)
    return errors


def _graph_errors(name: str, module: nn.Module, args: tuple[np.ndarray, ...], got: list) -> dict[str, float]:
    """Each float output's relative error between onnxruntime (`got`) and PyTorch; one past
    the tolerance is judged against the float64 evaluation (see check_parity)."""
    with torch.no_grad():
        want = [t.numpy() for t in module(*(torch.from_numpy(a) for a in args))]
    errors: dict[str, float] = {}
    exact: list[np.ndarray] | None = None
    for index, (out_name, g, w) in enumerate(zip(GRAPH_IO[name][1], got, want, strict=True)):
        if not np.issubdtype(g.dtype, np.floating):
            continue
        err = _relative_error(g, w)
        errors[f"{name}.{out_name}"] = err
        if err <= PARITY_TOLERANCE:
            continue
        if exact is None:
            exact = _float64_outputs(module, args)
        ort_err, torch_err = _relative_error(g, exact[index]), _relative_error(w, exact[index])
        if not ort_err <= ROUNDOFF_FACTOR * max(torch_err, PARITY_TOLERANCE):
            raise ExportParityError(
                f"ONNX output '{name}.{out_name}' differs from PyTorch by {err:.2e} relative "
                f"(tolerance {PARITY_TOLERANCE:.0e}; against float64, onnxruntime is off by {ort_err:.2e} "
                f"and PyTorch by {torch_err:.2e}); the export was discarded."
            )
    return errors


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max|got − want| / max(max|want|, 1e-6); NaN when either holds a NaN, which fails the gate."""
    return float(np.max(np.abs(got.astype(np.float64) - want)) / max(float(np.max(np.abs(want))), 1e-6))


def _float64_outputs(module: nn.Module, args: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """The graph's outputs computed in float64 from the same float32 inputs and weights."""
    with torch.no_grad():
        outputs = copy.deepcopy(module).double()(*(torch.from_numpy(a).double() for a in args))
    return [t.numpy() for t in outputs]


def library_versions() -> dict[str, str]:
    names = ["torch", "onnx", "onnxruntime", "onnxruntime-gpu", "polars", "numpy", "vae-pipeline"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


@dataclass(frozen=True)
class FittedModel:
    """What the graphs are built from: the trained model and scaler, its schema, the threshold
    and the features' baseline (the zero of per-feature contributions)."""

    result: TrainResult
    schema: FeatureSchema
    threshold: Threshold
    feature_baseline: np.ndarray


@dataclass(frozen=True)
class Provenance:
    """What the manifest says about how a version came to be, beside its graphs."""

    training: dict  # the settings it was trained with
    training_data: dict  # the data's fingerprint, files and imputations
    validation: ValidationRecord | dict  # a dict is checked before any work
    drift_reference: DriftReference | None = None
    lineage: dict | None = None  # the version it was retrained from, and on what


@dataclass(frozen=True)
class Destination:
    """Where a version is published: `root/name`, or `into` when the model folder is not
    (a retrained challenger goes beside its champion, whatever the folder is called: N20)."""

    name: str
    root: str | Path = "exported"
    into: Path | None = None
    make_latest: bool = True

    @property
    def model_root(self) -> Path:
        return Path(self.into) if self.into is not None else Path(self.root) / self.name


def check_model_name(name: str) -> str:
    """A model's name names a folder: letters, digits, '.', '_' and '-', never a path."""
    if not MODEL_NAME.fullmatch(name):
        raise PipelineError(
            f"model name {name!r} is not allowed: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (a name, never a path)."
        )
    return name


def export_model(
    fitted: FittedModel,
    provenance: Provenance,
    destination: Destination,
    probe_raw: np.ndarray,
    *,
    int8: bool = False,
    progress: bool = False,
) -> Path:
    """Write a new immutable version of `destination.name` and point `latest` at it (unless
    told otherwise); the graphs are checked against PyTorch on `probe_raw`. With `int8`, the
    int8 scorer too, and its score change on the probe in the manifest. With `progress`, a bar
    over the steps (the export takes seconds; silence looked like a hang). Returns the version folder."""
    name = check_model_name(destination.name)
    validation = ValidationRecord.model_validate(provenance.validation)  # refused before any work
    model_root = destination.model_root
    staging = new_staging(model_root)
    try:
        created = datetime.now(UTC).isoformat(timespec="seconds")
        props = _graph_props(name, created, fitted)
        graph_io, validation = _write_graphs(staging, fitted, validation, probe_raw, props, int8=int8, progress=progress)
        crash_point("export")
        result = fitted.result
        _save_checkpoint(staging / "checkpoint.pt", result, provenance.training)
        (staging / "history.json").write_text(json.dumps(result.history, indent=1) + "\n")
        manifest = Manifest(
            name=name,
            version="pending",
            created_at=created,
            feature_schema=fitted.schema,
            input_names=fitted.schema.input_names,
            scaler=ScalerSpec.of(result.scaler),
            model=result.model.shape.to_dict(),
            training=provenance.training,
            threshold=fitted.threshold,
            feature_baseline=[float(v) for v in fitted.feature_baseline],
            training_data=provenance.training_data,
            validation=validation,
            library_versions=library_versions(),
            opset=OPSET,
            graphs=graph_io,
            drift=provenance.drift_reference,
            lineage=provenance.lineage or {},
        )
        stamp_digest(staging, manifest)  # careless edits of any field that changes a flag are caught at load
        return publish_version(staging, model_root, manifest, destination.make_latest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _graph_props(name: str, created: str, fitted: FittedModel) -> dict[str, str]:
    """The metadata every graph carries, so a graph read alone says what it is."""
    return {
        "model_name": name,
        "created_at": created,
        "score_direction": "higher is more anomalous",
        "threshold": repr(fitted.threshold.value),
        "threshold_method": fitted.threshold.method,
        "input_names": json.dumps(fitted.schema.input_names),
        "scaler_in_graph": "scorer, scorer_sampled",
        "description": "VAE anomaly detector; see manifest.json beside this file",
    }


def _write_graphs(  # noqa: PLR0913 - the export's own pieces, keyword-only options
    staging: Path,
    fitted: FittedModel,
    validation: ValidationRecord,
    probe_raw: np.ndarray,
    props: dict[str, str],
    *,
    int8: bool,
    progress: bool,
) -> tuple[dict, ValidationRecord]:
    """Export every graph into `staging` (`props` in each one's metadata), check them against
    PyTorch (and the int8 scorer's score change, with `int8`); the graphs' inputs and outputs,
    and the validation record with the parity (and int8) figures."""
    vae, schema = fitted.result.model.cpu().eval(), fitted.schema
    graphs = build_graphs(vae, fitted.result.scaler, fitted.feature_baseline, schema.input_sources)
    disable = None if progress else True  # None: on a terminal only
    steps = tqdm(total=len(graphs) + 1 + int8, desc="export", unit="step", disable=disable, leave=False)
    for graph_name, module in graphs.items():
        steps.set_postfix_str(graph_name)
        _export_graph(
            module, graph_name, vae, staging / f"{graph_name}.onnx", {**props, "graph": graph_name}, exporter=EXPORTER
        )
        steps.update()
    steps.set_postfix_str("parity")
    parity = check_parity(
        staging, vae, fitted.result.scaler, probe_raw, baseline=fitted.feature_baseline, sources=schema.input_sources
    )
    steps.update()
    graph_io = {k: {"inputs": i, "outputs": o} for k, (i, o) in GRAPH_IO.items()}
    if int8:
        steps.set_postfix_str("int8")
        quantize_scorer(staging / f"{SCORER}.onnx", staging / f"{SCORER_INT8}.onnx")
        drift = score_drift(staging / f"{SCORER}.onnx", staging / f"{SCORER_INT8}.onnx", probe_raw)
        validation = validation.model_copy(update={"int8": Int8Drift(**drift)})
        graph_io[SCORER_INT8] = graph_io[SCORER]
        steps.update()
    steps.close()
    return graph_io, validation.model_copy(update={"parity_max_relative_error": max(parity.values())})


def _save_checkpoint(path: Path, result: TrainResult, training: dict) -> None:
    """Tensors and plain values only, so it loads with torch.load(weights_only=True)."""
    torch.save(
        {
            "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
            "shape": result.model.shape.to_dict(),
            "scaler": {k: torch.from_numpy(v) for k, v in vars(result.scaler).items() if v is not None},
            "training": json.loads(json.dumps(training)),
        },
        path,
    )


def load_checkpoint(path: str | Path) -> tuple[VAE, Scaler]:
    """Rebuild a model for retraining or inspection from `checkpoint.pt` (no arbitrary code)."""
    from pipeline.model.vae import VAEShape

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelArtifactError(
            f"'{path}' is not a plain-tensor checkpoint and was not loaded: {str(exc).strip().splitlines()[0]}"
        ) from exc
    shape = data["shape"]
    state = data["state_dict"]
    vae = VAE(VAEShape(**{**shape, "hidden": tuple(shape["hidden"])}), state["bernoulli_mask"], state.get("input_weight"))
    vae.load_state_dict({"input_weight": vae.input_weight, **state})  # older checkpoints: every input weighs 1
    scaler = data.get("scaler") or {"mean": data["scaler_mean"], "scale": data["scaler_scale"]}  # older checkpoints
    return vae.eval(), Scaler(**{k: v.numpy() for k, v in scaler.items()})
