"""Drift against the training data: the PSI itself, and batches scored by a real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from common import DATA

from pipeline.artifact.drift import Histogram
from pipeline.core.config import DriftRules
from pipeline.runtime import Scorer, score_files

BATCH = DATA / "sensors" / "batch.parquet"


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = Histogram.of_values(rng.normal(size=20_000))
    assert len(reference.fractions) == 10 and abs(sum(reference.fractions) - 1) < 1e-9
    assert reference.psi(reference.counts(rng.normal(size=5_000))) < 0.02
    assert reference.psi(reference.counts(rng.normal(0.5, 1, size=5_000))) > 0.2
    assert reference.psi(reference.counts(rng.normal(1.0, 1, size=5_000))) > 0.8
    assert reference.psi(reference.counts(np.array([np.nan, np.inf]))) == 0.0  # nothing countable


def test_bins_hold_values_above_their_lower_edge_and_at_or_below_their_upper_one() -> None:
    """Counted by comparisons with the edges: the same bins as a left-sided searchsorted,
    values exactly on an edge, float32 readings a rounding either side of one, and
    non-finite readings (left out) included."""
    rng = np.random.default_rng(1)
    reference = Histogram.of_values(rng.normal(size=1_000))
    edges = np.asarray(reference.edges)
    near = edges.astype(np.float32)
    values = np.concatenate(
        [rng.normal(size=5_000), edges, near, np.nextafter(near, np.float32(np.inf)), [np.nan, np.inf, -np.inf]]
    ).astype(np.float32)
    finite = values[np.isfinite(values)]
    expected = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=len(reference.fractions))
    assert reference.counts(values).tolist() == expected.tolist() and expected.sum() == len(values) - 3
    assert reference.counts(values.astype(np.float64)).tolist() == expected.tolist()


def test_categories_count_unseen_values_in_their_own_bin() -> None:
    one_hot = np.eye(3)[[0, 0, 1, 2]]
    reference = Histogram.of_categories(one_hot, ["a", "b", "c"])
    assert reference.fractions == [0.5, 0.25, 0.25, 0.0]
    unseen = np.zeros((4, 3))
    assert reference.counts(unseen).tolist() == [0, 0, 0, 4] and reference.psi(reference.counts(unseen)) > 1


@pytest.fixture(scope="module")
def scorer(sensor_model: Path) -> Scorer:
    return Scorer.load(sensor_model)


def drift_of(scorer: Scorer, frame: pl.DataFrame, folder: Path, rules: DriftRules | None = None):
    frame.write_parquet(folder / "batch.parquet")
    report = score_files(scorer, folder / "batch.parquet", folder / "scores.parquet", drift_rules=rules)
    assert report.drift is not None
    return report.drift


def test_normal_batches_have_not_drifted(scorer: Scorer, tmp_path: Path) -> None:
    """The batch's clean rows (four later days of the same machines), and one machine's rows
    alone (a batch of one machine is compared with that machine, not the fleet)."""
    clean = pl.read_parquet(BATCH).filter(pl.col("label") == 0)
    drift = drift_of(scorer, clean, tmp_path)
    assert drift.rows == clean.height and not drift.drifted, drift
    assert max(drift.features.values()) < 0.1
    one = pl.read_parquet(DATA / "sensors" / "history.parquet").filter(pl.col("machine") == "press-03").tail(600)
    assert not drift_of(scorer, one, tmp_path).drifted


def test_a_level_shift_names_its_sensor_batch_wide_and_per_machine(scorer: Scorer, tmp_path: Path) -> None:
    clean = pl.read_parquet(BATCH).filter(pl.col("label") == 0)
    spread = clean["pressure"].std()
    fleet_wide = drift_of(scorer, clean.with_columns(pl.col("pressure") + spread), tmp_path)
    assert fleet_wide.drifting == ["pressure"] and fleet_wide.features["pressure"] > 0.5
    assert fleet_wide.latent > drift_of(scorer, clean, tmp_path).latent  # the encoder sees it too
    sd = clean.filter(pl.col("machine") == "press-02")["motor_temp"].std()
    one_machine = clean.with_columns(
        pl.when(pl.col("machine") == "press-02")
        .then(pl.col("motor_temp") + 2 * sd)
        .otherwise(pl.col("motor_temp"))
        .alias("motor_temp")
    )
    drift = drift_of(scorer, one_machine, tmp_path)
    assert list(drift.entities) == ["press-02"] and list(drift.entities["press-02"]) == ["motor_temp"]
    assert drift.entities["press-02"]["motor_temp"] > 1.0
    assert not drift_of(scorer, one_machine, tmp_path, DriftRules(psi=5.0, shift=50.0)).drifted  # the rules decide


def test_n08_n09_unknown_or_short_machines_are_named_and_judged_by_the_fleet(scorer: Scorer, tmp_path: Path) -> None:
    """N08: a +5 SD `load` shift on machines renamed (not in training) reported no drift at all;
    N09: so did 90 rows per machine. Entities without a judgement of their own are now named,
    with the reason; unknown ones holding most of the batch are judged by the fleet's PSI. Short
    ones are named only: on 90 clean rows per machine (a slice of the day) the PSI reads drift."""
    clean = pl.read_parquet(BATCH).filter(pl.col("label") == 0)
    shifted = clean.with_columns(pl.col("load") + 5 * clean["load"].std())
    renamed = drift_of(scorer, shifted.with_columns(machine=pl.lit("line9-") + pl.col("machine")), tmp_path)
    assert "load" in renamed.drifting and set(renamed.not_judged.values()) == {"not in the training data"}
    short = drift_of(scorer, shifted.group_by("machine", maintain_order=True).head(90), tmp_path)
    assert len(short.not_judged) == 4 and all("fewer than 100" in why for why in short.not_judged.values())
    quiet = drift_of(scorer, clean.group_by("machine", maintain_order=True).head(90), tmp_path)
    assert not quiet.drifted and len(quiet.not_judged) == 4  # named, and no false drift
