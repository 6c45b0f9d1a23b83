"""examples/python runs as a user runs it (a fresh interpreter, few epochs) and says what its
docstring promises: the table's ROC-AUC, the fleet's alarms, and the y convention's two AUCs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from common import ROOT

pytestmark = pytest.mark.slow


def run_example(name: str) -> str:
    done = subprocess.run(
        [sys.executable, f"examples/python/{name}.py", "--epochs", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_table_example_trains_scores_and_ranks_the_labelled_faults() -> None:
    out = run_example("score_a_table")
    assert re.search(r"1000 rows scored, \d+ above the threshold", out)
    assert float(re.search(r"ROC-AUC against the batch's labels: ([\d.]+)", out)[1]) > 0.7


def test_the_fleet_example_reports_alarms_per_machine() -> None:
    out = run_example("sensor_fleet")
    flagged, alarms = (int(v) for v in re.search(r"4608 time steps scored: (\d+) flagged, (\d+) alarm", out).groups())
    assert 0 < alarms <= flagged
    assert all(machine in out for machine in ("press-01", "press-02", "press-03", "press-04"))


def test_the_sklearn_example_shows_why_y_1_needs_anomaly_score() -> None:
    out = run_example("sklearn_pipeline")
    assert len(re.findall(r"\{'vaedetector__beta': [\d.]+, 'vaedetector__latent': \d\}: ROC-AUC", out)) == 4
    default, ours = (float(v) for v in re.search(r"default scorer\): ([\d.]+); by anomaly_score: ([\d.]+)", out).groups())
    assert ours > 0.7 and abs(default - (1 - ours)) < 0.02  # the default scorer measures 1 − AUC
