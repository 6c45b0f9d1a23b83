"""From files to an exported model version: the training job behind `vad train`.

files → validated frame → feature rows (windows in sensor mode) → split → trained VAE →
validation scores → threshold → ONNX files + manifest."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.artifact.drift import SERIES, DriftReference, column_blocks, reference_of
from pipeline.artifact.threshold import QUANTILES, Calibration, Threshold, ValidationRecord, percentile_table
from pipeline.core.config import DataConfig, PipelineConfig, ThresholdConfig
from pipeline.core.errors import DataError
from pipeline.data import ingest
from pipeline.data.inputs import model_inputs
from pipeline.data.schema import FeatureSchema, coerce, fit_statistics, learn_schema, to_matrix
from pipeline.data.windows import WindowIndex, entity_bounds, sort_for_windows
from pipeline.model.defaults import resolve
from pipeline.model.graphs import score_with_torch
from pipeline.model.train import TrainResult, train_vae
from pipeline.runtime.steps import StepRule
from pipeline.training.calibrate import fit_threshold
from pipeline.training.export import Destination, FittedModel, Provenance, export_model


@dataclass
class TrainingSet:
    """Model inputs with their validation mask and optional labels (one per input row)."""

    x: np.ndarray
    is_validation: np.ndarray
    labels: np.ndarray | None
    schema: FeatureSchema
    files: list[Path]
    imputed: dict[str, int]
    merged: int = 0  # sensor readings folded into another of the same time (DataConfig.duplicates)
    entities: np.ndarray | None = None  # sensor mode: each input row's entity (SERIES without an entity column)
    windows: WindowIndex | None = None  # sensor windows: where each input row (a window) ends


@dataclass
class Calibrated:
    """A trained model with its validation scores, threshold and per-input baseline."""

    result: TrainResult
    threshold: Threshold
    validation_scores: np.ndarray
    feature_baseline: np.ndarray
    # The threshold's scores (Threshold.calibration says which rows) and the same rows' KL from
    # the prior: the score and latent drift references.
    reference_kl: np.ndarray
    calibration_scores: np.ndarray


@dataclass
class FitOutcome:
    """What `fit_model` produced and where it went."""

    version_dir: Path
    calibrated: Calibrated
    data: TrainingSet


def _sampling_step(files: list[Path], config: PipelineConfig) -> int:
    """Tabular training with `train.max_rows`: keep every n-th row while reading, so data
    larger than memory trains on an even sample of it (the exact cap is drawn later). Sensor
    series are read whole: thinning them would break their windows."""
    cap = config.train.max_rows
    if not cap or config.data.mode != "tabular":
        return 1
    total = sum(ingest.count_rows(f, config.data.csv) for f in files)
    return max(1, total // cap)


def _needed_columns(data: DataConfig) -> list[str] | None:
    """With named features only the columns they and the keys need are read; otherwise all
    (None), to infer them."""
    if data.features is None:
        return None
    named = [*data.features, data.label_column, data.time_column, data.entity_column, *data.id_columns]
    return list(dict.fromkeys(c for c in named if c))


def _checked_part(frame: pl.DataFrame, schema: FeatureSchema, data: DataConfig, file: Path) -> pl.DataFrame:
    """One file's rows coerced to the schema and checked where the file and its row can be
    named (keys of a series, a missing value when gaps are errors), with its label if any."""
    part = coerce(frame, schema, str(file))
    if schema.mode == "sensor":
        sort_for_windows(part, schema, str(file))  # missing or repeated keys, named in their file
    if data.missing == "error":
        to_matrix(part, schema, str(file))
    if data.label_column:
        if data.label_column not in frame.columns:
            raise DataError(f"label column '{data.label_column}' is missing (file '{file}').")
        part = part.with_columns(frame[data.label_column].cast(pl.Float64).alias("__label__"))
    return part


def _read_all(source: str | Path, config: PipelineConfig) -> tuple[list[Path], pl.DataFrame, FeatureSchema]:
    """Every training file, checked against the schema learnt on the first, as one frame."""
    data_cfg = config.data
    files = ingest.resolve_sources(source)
    every = _sampling_step(files, config)
    raw = [ingest.read_file(f, _needed_columns(data_cfg), data_cfg.csv, every=every) for f in files]
    first = learn_schema(raw[0], data_cfg, str(files[0]))
    frame = pl.concat(
        [_checked_part(frame, first, data_cfg, file) for file, frame in zip(files, raw, strict=True)],
        how="vertical_relaxed",
    )
    return files, frame, fit_statistics(first, frame)


def load_training_set(source: str | Path, config: PipelineConfig) -> TrainingSet:
    """Read every file, learn the schema, and build the input rows and the validation split."""
    files, frame, schema = _read_all(source, config)
    origin = f"{len(files)} training files" if len(files) > 1 else str(files[0])
    # Sorted again over all files (two files may hold the same readings); only full windows.
    inputs = model_inputs(frame, schema, file=origin, windows="full", coerced=True)
    frame, matrix, report = inputs.rows, inputs.x, inputs.report
    labels = frame["__label__"].to_numpy() if "__label__" in frame.columns else None
    entities = None  # sensor mode: each row's entity (one series without an entity column: SERIES)
    if schema.mode == "sensor":
        entities = (
            frame[schema.entity_column].cast(pl.String).to_numpy() if schema.entity_column else np.full(frame.height, SERIES)
        )
    rng = np.random.default_rng(config.train.seed)
    windows = inputs.windows
    if windows is not None:
        labels = labels[windows.ends] if labels is not None else None
        entities = entities[windows.ends] if entities is not None else None
        is_validation = validation_windows(
            windows.ends,
            entity_bounds(frame, schema),
            config.train.validation_fraction,
            spread=len(schema.row_features) == 1,
        )
    else:
        is_validation = random_validation_mask(len(matrix), config.train.validation_fraction, rng)
    if config.train.max_rows and len(matrix) > config.train.max_rows:
        keep = np.sort(rng.choice(len(matrix), config.train.max_rows, replace=False))
        matrix, is_validation = matrix[keep], is_validation[keep]
        labels = labels[keep] if labels is not None else None
        entities = entities[keep] if entities is not None else None
        windows = WindowIndex(windows.ends[keep], windows.spans) if windows is not None else None
    if is_validation.all() or not is_validation.any():
        is_validation = np.zeros(len(matrix), bool)
        is_validation[-max(1, len(matrix) // 10) :] = True
    return TrainingSet(matrix, is_validation, labels, schema, files, dict(report.imputed), report.merged, entities, windows)


def random_validation_mask(rows: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Rows drawn for validation (tabular data): a training row at least, and the two
    validation rows a threshold needs where there are three rows or more."""
    if rows < 2:
        raise DataError(f"training needs at least 2 rows (one for validation), got {rows}.")
    mask = rng.random(rows) < fraction
    least = 2 if rows >= 3 else 1
    if mask.all() or mask.sum() < least:
        mask = np.zeros(rows, bool)
        mask[-max(least, rows // 10) :] = True
    return mask


TIME_BLOCKS = 10  # a series of one signal gives validation the latest windows of each of these blocks


def validation_windows(ends: np.ndarray, bounds: list[tuple[int, int]], fraction: float, spread: bool = False) -> np.ndarray:
    """Validation = the latest `fraction` of each entity's windows (no look-ahead leakage), or,
    `spread`, the latest `fraction` of each of TIME_BLOCKS consecutive blocks of them.
    Early stopping on the latest windows picks the model closest to what is scored next, which
    ranks SKAB's 8 sensors best; the latest windows of a series of one signal are one phase of
    its cycle, and spread over the period they keep a daily cycle's other phase from stopping
    training at the end of the KL warm-up (bench/NOTES.md, 2026-12-02)."""
    mask = np.zeros(len(ends), bool)
    for start, stop in bounds:
        idx = np.flatnonzero((ends >= start) & (ends < stop))
        if len(idx) < 2:
            continue
        for block in np.array_split(idx, min(TIME_BLOCKS, max(1, len(idx) // 10)) if spread else 1):
            if len(block):
                mask[block[-max(1, int(round(len(block) * fraction))) :]] = True
    return mask


def train_and_calibrate(
    x: np.ndarray,
    is_validation: np.ndarray,
    config: PipelineConfig,
    labels: np.ndarray | None = None,
    threshold_config: ThresholdConfig | None = None,
    windows: WindowIndex | None = None,
) -> Calibrated:
    """Train on the training rows and fit the contribution baseline on the validation rows,
    scored exactly as the exported scorer scores them. The threshold is fitted on the
    validation scores, or, for sensor windows, on the scores of every window of the training
    period: the latest windows of a short series are one phase of its cycle, and a 0.99
    quantile of a few dozen is their maximum. `windows` places sensor windows in their series,
    for the window rule (WindowSpec) that makes the scorer's scores of their steps."""
    config = resolve(config, inputs=x.shape[1])
    result = train_vae(x[~is_validation], x[is_validation], config.model, config.train)
    if config.data.mode == "sensor":  # one pass over the whole period; validation is a part of it
        window_scores, period_nll = score_with_torch(result.model, result.scaler, x)
        reference_kl = window_scores - period_nll.sum(axis=1)
        rule = StepRule(window=config.data.window)  # the scorer's rule, before its threshold exists
        calibration_scores = rule.step_scores(window_scores, windows) if windows is not None else window_scores
        scores, nll = calibration_scores[is_validation], period_nll[is_validation]
        calibration_labels = labels
        calibration = Calibration(source="training period", rows=len(x), coverage=1.0)
    else:
        scores, nll = score_with_torch(result.model, result.scaler, x[is_validation])
        calibration_scores, calibration_labels = scores, labels[is_validation] if labels is not None else None
        reference_kl = scores - nll.sum(axis=1)
        calibration = Calibration(source="validation", rows=len(scores), coverage=len(scores) / len(x))
    threshold = fit_threshold(calibration_scores, threshold_config or config.threshold, calibration_labels)
    return Calibrated(
        result,
        threshold.model_copy(update={"calibration": calibration}),
        scores,
        nll.mean(axis=0),
        reference_kl,
        calibration_scores,
    )


def fingerprint(x: np.ndarray, names: list[str]) -> dict:
    """Rows and a sha256 of the exact training inputs, to tell later which data made a model."""
    digest = hashlib.sha256("\x1f".join(names).encode())
    digest.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return {"rows": int(len(x)), "inputs": int(x.shape[1]), "sha256": digest.hexdigest()}


def fit_model(
    source: str | Path,
    config: PipelineConfig,
    root: str | Path = "exported",
    *,
    lineage: dict | None = None,
    make_latest: bool = True,
    into: Path | None = None,
) -> FitOutcome:
    """Train on `source` and export a new version of `config.name` under `root` (or in the
    model folder `into`); `lineage` names its parent (a retrained challenger), published
    without moving `latest` unless `make_latest`."""
    data = load_training_set(source, config)
    calibrated = train_and_calibrate(data.x, data.is_validation, config, data.labels, windows=data.windows)
    return FitOutcome(
        export_fitted(data, calibrated, config, root, lineage=lineage, make_latest=make_latest, into=into), calibrated, data
    )


def validation_record(calibrated: Calibrated) -> ValidationRecord:
    """The manifest's validation section: the objective reached and the calibration scores'
    quantiles (those the threshold was fitted on). Alerts measure severity from the median,
    the `normal` level of the score."""
    result, scores = calibrated.result, calibrated.calibration_scores
    return ValidationRecord(
        rows=len(scores),
        neg_beta_elbo=result.best_validation,
        neg_elbo=result.history[result.best_epoch - 1]["validation_neg_elbo"],
        score_quantiles={q: float(np.quantile(scores, float(q))) for q in QUANTILES},
        score_percentiles=percentile_table(scores),
    )


def export_fitted(  # noqa: PLR0913 - keyword-only publishing choices
    data: TrainingSet,
    calibrated: Calibrated,
    config: PipelineConfig,
    root: str | Path,
    *,
    lineage: dict | None = None,
    make_latest: bool = True,
    into: Path | None = None,
) -> Path:
    """Export a trained, calibrated model as the next version of `config.name` (and, unless
    told otherwise, make it `latest`)."""
    result, config = calibrated.result, resolve(config, inputs=data.x.shape[1])
    probe = np.concatenate([data.x[data.is_validation][:192], data.x[~data.is_validation][:64]])
    fitted = FittedModel(result, data.schema, calibrated.threshold, calibrated.feature_baseline)
    provenance = Provenance(
        training={
            **config.model_dump(mode="json"),
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "device": result.device,
            **({"plan": asdict(result.plan)} if result.plan else {}),
        },
        training_data={
            **fingerprint(data.x, data.schema.input_names),
            "files": [str(f) for f in data.files],
            "imputed": data.imputed,
        },
        validation=validation_record(calibrated),
        drift_reference=drift_reference(data, calibrated),
        lineage=lineage,
    )
    destination = Destination(config.name, root, into, make_latest)
    return export_model(fitted, provenance, destination, probe, int8=config.export.int8, progress=config.train.progress)


def drift_reference(data: TrainingSet, calibrated: Calibrated) -> DriftReference:
    """The training rows' histograms per source column (a window's last step is its own row),
    and the calibration rows' KL and scores: what a batch's drift is measured against."""
    rows = data.x[:, -len(data.schema.row_features) :]
    window = data.schema.window
    stride = window.stride if data.schema.mode == "sensor" and window is not None and window.length > 1 else 1
    return reference_of(
        rows, column_blocks(data.schema), calibrated.reference_kl, calibrated.calibration_scores, data.entities, stride
    )
