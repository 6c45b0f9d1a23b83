"""A new threshold for a model without retraining it (as alibi-detect's `infer_threshold`):
score recent data the operator vouches for, fit the threshold on those scores (or on labels),
and publish a new version with the same graphs, whose metadata names the new threshold.

Torch is not needed: the scores come from the exported scorer, the graphs are copied."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import polars as pl

from pipeline.artifact.manifest import Manifest, new_staging, publish_version, set_latest
from pipeline.artifact.threshold import Threshold
from pipeline.artifact.versions import latest_version
from pipeline.core.config import ThresholdConfig
from pipeline.core.errors import DataError, PipelineError
from pipeline.data import ingest
from pipeline.data.inputs import model_inputs
from pipeline.runtime import Scorer
from pipeline.training.calibrate import fit_threshold
from pipeline.training.graph_metadata import stamp_digest


@dataclass
class Refit:
    """The new version, its threshold, and the share of the given rows scoring above it."""

    version_dir: Path
    threshold: Threshold
    rows: int
    flagged: float
    active: bool = False  # made `latest`


def scores_and_labels(scorer: Scorer, source: str | Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Every row's score (every time step in sensor mode), with its label when asked for,
    in the order the scorer puts the rows (entity, then time)."""
    scores, labels = [], []
    rule = scorer.step_rule()
    for file in ingest.resolve_sources(source):
        columns = scorer.schema.source_columns + ([label_column] if label_column else [])
        carry = [label_column] if label_column else []
        raw = ingest.read_file(file, columns, scorer.schema.csv)
        inputs = model_inputs(raw, scorer.schema, file=str(file), keep_infinite=True, carry=carry)
        if label_column:
            labels.append(inputs.rows[label_column].cast(pl.Float64).to_numpy())
        window_scores = scorer.score_array(inputs.x).score
        scores.append(rule.step_scores(window_scores, inputs.windows) if inputs.windows is not None else window_scores)
    if not scores:
        raise DataError(f"no rows to fit a threshold on in '{source}'.")
    return np.concatenate(scores), (np.concatenate(labels) if label_column else None)


def _restamped_graph(source: Path, target: Path, threshold: Threshold, created: str) -> None:
    """Copy an ONNX graph with its metadata naming the new threshold and time."""
    graph = onnx.load(str(source))
    props = {p.key: p.value for p in graph.metadata_props}
    props.update(threshold=repr(threshold.value), threshold_method=threshold.method, created_at=created)
    del graph.metadata_props[:]
    for key, value in props.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(target))


def _refitted_manifest(
    parent: Manifest, threshold: Threshold, created: str, source: str | Path, scores: np.ndarray
) -> Manifest:
    """The parent version's manifest with the new threshold, and a lineage naming the parent,
    the change and the scores it was fitted on."""
    lineage = {
        "parent_version": parent.version,
        "change": "threshold re-fitted",
        "data": {
            "source": str(source),
            "rows": int(len(scores)),
            "scores_sha256": hashlib.sha256(scores.astype(np.float32).tobytes()).hexdigest(),
        },
        "previous_threshold": parent.threshold.model_dump(),
    }
    return parent.model_copy(deep=True, update={"created_at": created, "threshold": threshold, "lineage": lineage})


def refit_threshold(
    model: str | Path, source: str | Path, config: ThresholdConfig, label_column: str | None = None, activate: bool = False
) -> Refit:
    """Fit `config` on the scores of `source` and publish it as the model's next version; with
    `activate`, make it `latest` too, only if `latest` has not moved since this started (a
    threshold fitted on a batch that held faults went live at once: N15)."""
    scorer = Scorer.load(model, provider="cpu")
    started_from = latest_version(scorer.folder.parent)
    if config.persistence.n > 1 and scorer.schema.mode != "sensor":
        raise PipelineError("alarm persistence counts rows of a series: it needs a sensor model.")
    scores, labels = scores_and_labels(scorer, source, label_column)
    if config.persistence.n > len(scores):  # N13: 1000000/1000000 wrote a version that could never flag
        raise PipelineError(
            f"persistence {config.persistence.k}/{config.persistence.n} needs {config.persistence.n:,} "
            f"rows in a row, more than the {len(scores):,} it is fitted on: it could never flag."
        )
    if labels is not None and not np.isin(labels, (0.0, 1.0)).all():
        raise DataError(f"label column '{label_column}' must hold 0 and 1 only.")
    threshold = fit_threshold(scores, config, labels)
    if not np.isfinite(threshold.value):
        raise PipelineError(f"the fitted threshold is not finite ({threshold.value}); nothing was written.")
    parent = scorer.manifest
    created = datetime.now(UTC).isoformat(timespec="seconds")
    manifest = _refitted_manifest(parent, threshold, created, source, scores)
    staging = new_staging(scorer.folder.parent)
    try:
        for name in parent.files:
            source_file, target = scorer.folder / name, staging / name
            if name.endswith(".onnx"):  # same arithmetic; the metadata names the new threshold
                _restamped_graph(source_file, target, threshold, created)
            else:
                shutil.copyfile(source_file, target)
        stamp_digest(staging, manifest)
        folder = publish_version(staging, scorer.folder.parent, manifest, make_latest=False)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    refit = Refit(folder, threshold, int(len(scores)), float(np.mean(scores > threshold.value)))
    if activate:
        set_latest(scorer.folder.parent, folder.name, expected=started_from)
        refit.active = True
    return refit
