"""Shared fixtures: small real models trained once per session on the bundled data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from common import DATA, FAST_TRAIN, SHARED

from pipeline.core.config import load_config


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (benchmark sets); absent in a user's clone, so those tests skip."""
    if not (SHARED / "MANIFEST.md").is_file():
        pytest.skip(f"benchmark data not found at {SHARED} (CI has it beside the clone; set SHARED_DATA to point elsewhere)")
    return SHARED


@pytest.fixture(scope="session")
def exported_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exported")


@pytest.fixture(scope="session")
def sensor_fit(exported_root: Path):
    from pipeline.training.fit import fit_model

    config = load_config(DATA / "sensors.toml", train=FAST_TRAIN)
    return fit_model(DATA / "sensors" / "history.parquet", config, exported_root)


@pytest.fixture(scope="session")
def tabular_fit(exported_root: Path):
    from pipeline.training.fit import fit_model

    config = load_config(DATA / "tabular.toml", train=FAST_TRAIN)
    return fit_model(DATA / "tabular" / "history.csv", config, exported_root)


@pytest.fixture(scope="session")
def sensor_model(sensor_fit) -> Path:
    return sensor_fit.version_dir


@pytest.fixture(scope="session")
def tabular_model(tabular_fit) -> Path:
    return tabular_fit.version_dir


def _hypothesis_profiles() -> None:
    """`ci` (the default): a few hundred inputs in all; `fuzz` (make fuzz): over 10,000."""
    from hypothesis import HealthCheck, settings

    common = {
        "deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
        "derandomize": False,
        "print_blob": True,
    }
    settings.register_profile("ci", max_examples=60, **common)
    settings.register_profile("fuzz", max_examples=2600, **common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_hypothesis_profiles()
