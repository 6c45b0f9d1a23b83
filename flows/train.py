"""Prefect flow `vad-train`: ingest and validate → train → calibrate the threshold → export
and register the new version (`latest`). Each task wraps one `pipeline.training.fit` call; the
report (loss curves, validation histogram with the threshold, manifest facts) is an artifact.

Run:  python -m flows.train data/sensors/history.parquet --config data/sensors.toml"""

from pathlib import Path
from typing import Any, Optional

import typer
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from pipeline.artifact.manifest import read_manifest
from pipeline.core.config import PipelineConfig, ThresholdConfig, load_config
from pipeline.core.errors import exit_on_user_error
from pipeline.ops import reports
from pipeline.training import fit

IO_RETRIES: dict[str, Any] = {"retries": 2, "retry_delay_seconds": exponential_backoff(backoff_factor=2)}


@task(**IO_RETRIES, cache_policy=NO_CACHE)  # arrays stay in memory: nothing to persist
def load_training_set(source: str, config: PipelineConfig) -> fit.TrainingSet:
    return fit.load_training_set(source, config)


@task(cache_policy=NO_CACHE)
def train_and_calibrate(data: fit.TrainingSet, config: PipelineConfig) -> fit.Calibrated:
    return fit.train_and_calibrate(data.x, data.is_validation, config, data.labels, windows=data.windows)


@task(**IO_RETRIES, cache_policy=NO_CACHE)
def export_version(data: fit.TrainingSet, calibrated: fit.Calibrated, config: PipelineConfig, root: str) -> str:
    return str(fit.export_fitted(data, calibrated, config, root))


@task(cache_policy=NO_CACHE)
def publish_training_report(version_dir: str, calibrated: fit.Calibrated) -> None:
    folder = Path(version_dir)
    manifest = read_manifest(folder)
    create_markdown_artifact(
        key="vad-training-report",
        description=f"Training report for {manifest.key}",
        markdown=reports.training_report(manifest, calibrated.result.history, calibrated.validation_scores, folder),
    )
    create_link_artifact(key="vad-model-folder", link=folder.resolve().as_uri(), link_text=manifest.key)


@flow(name="vad-train")
def train_flow(
    source: str = "data/sensors/history.parquet",
    config: Optional[str] = "data/sensors.toml",
    name: Optional[str] = None,
    output_root: str = "exported",
    epochs: Optional[int] = None,
    threshold: Optional[ThresholdConfig] = None,
) -> str:
    """Train on `source` (file, glob or folder) and publish a new model version; returns its folder."""
    cfg = load_config(
        config,
        name=name,
        train={"progress": False, "epochs": epochs},
        threshold=threshold.model_dump() if threshold else None,
    )
    data = load_training_set(source, cfg)
    calibrated = train_and_calibrate(data, cfg)
    version_dir = export_version(data, calibrated, cfg, output_root)
    publish_training_report(version_dir, calibrated)
    get_run_logger().info(
        "published %s (threshold %.6g, %s)", version_dir, calibrated.threshold.value, calibrated.threshold.method
    )
    return version_dir


def main(
    source: str = typer.Argument(..., help="Training data: file, glob or folder."),
    config: Optional[str] = typer.Option(None, help="TOML config."),
    name: Optional[str] = typer.Option(None, help="Model name (default: from the config)."),
    output_root: str = typer.Option("exported", help="Where model versions go."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs."),
) -> None:
    """Run the training flow once."""
    print(train_flow(source=source, config=config, name=name, output_root=output_root, epochs=epochs))


if __name__ == "__main__":
    exit_on_user_error(lambda: typer.run(main))
