"""A real Prefect server on loopback, a real webhook receiver on loopback, and inbox batches
cut from the bundled sensor data (one normal, one with an injected fault)."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from prefect_helpers import DATA, FAST_PREFECT, WebhookReceiver, free_port

from flows.serve import start_local_server


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME; yields the env for clients."""
    home = tmp_path_factory.mktemp("prefect-home")
    saved = dict(os.environ)
    os.environ.update({**FAST_PREFECT, "PREFECT_HOME": str(home)})
    try:
        process, api_url = start_local_server(free_port(), log_file=home / "server.log")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    env = {**os.environ, **FAST_PREFECT, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url}
    yield env
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def webhook() -> WebhookReceiver:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def inbox_batches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two batches from the training history of one machine: with a stuck-high pressure sensor
    for 60 steps (10 hours), and unchanged, later (a stream's batches are scored in data time)."""
    folder = tmp_path_factory.mktemp("batches")
    history = pl.read_parquet(DATA / "sensors" / "history.parquet").drop("label", "anomaly_kind")
    machine = history.filter(pl.col("machine") == history["machine"][0])
    normal = machine.slice(2400, 300)
    faulty = (
        machine.slice(2000, 300)
        .with_row_index()
        .with_columns(
            pressure=pl.when(pl.col("index").is_between(100, 160))
            .then(pl.col("pressure").max() * 1.5)
            .otherwise(pl.col("pressure"))
        )
        .drop("index")
    )
    paths = {"normal": folder / "normal.parquet", "faulty": folder / "faulty.parquet"}
    normal.write_parquet(paths["normal"])
    faulty.write_parquet(paths["faulty"])
    return paths
