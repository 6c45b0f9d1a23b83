"""A plant historian's export as it comes (newcomer review, issue 48): Windows' cp1252 encoding,
';' between fields and decimal commas, a units row under the header (°C), `#N/A` for a missing
reading, day-first local wall-clock times across the night the clocks go back, 4 machines. It
trains with flags alone, no reading dropped or merged, and the scheduled flow scores the same
file as `vad score` does."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from prefect_helpers import ROOT, drop_into, score_command

from pipeline.ops.inbox import open_ledger

pytestmark = pytest.mark.slow

MACHINES, STEP = ("OVEN-A", "OVEN-B", "PRESS-01", "PRESS-02"), timedelta(minutes=10)
START = datetime(2026, 10, 24, 0, 0)  # local time, Europe/Berlin: clocks go back at 03:00 on the 25th
MISSING_EVERY = 53  # one reading in 53 is `#N/A`
FLAGS = ["--mode", "sensor", "--time-column", "time", "--entity-column", "machine", "--time-zone", "Europe/Berlin"]
FLAGS += ["--decimal-comma", "--skip-rows-after-header", "1", "--null-values", "#N/A", "--missing", "impute"]
TIME_FORMAT = "%d.%m.%Y %H:%M:%S"
FLAGS += ["--encoding", "cp1252", "--time-format", TIME_FORMAT]


def local_times(steps: int) -> list[str]:
    """Wall-clock times every 10 minutes as the historian writes them: 02:00-02:50 twice on the 25th."""
    times, utc = [], START - timedelta(hours=2)  # CEST is UTC+2 until 01:00 UTC on the 25th
    switch = datetime(2026, 10, 25, 1, 0)
    for _ in range(steps):
        offset = timedelta(hours=2) if utc < switch else timedelta(hours=1)
        times.append((utc + offset).strftime(TIME_FORMAT))
        utc += STEP
    return times


def decimal_comma(value: float) -> str:
    return f"{value:.3f}".replace(".", ",")


def historian_csv(path: Path, steps: int = 432) -> int:
    """Write the export; returns its number of readings (data rows)."""
    rng = np.random.default_rng(3)
    lines = ["time;machine;temp_in;pressure", ";;°C;bar"]
    times = local_times(steps)
    count = 0
    for m, machine in enumerate(MACHINES):
        phase = np.linspace(0, 6 * np.pi, steps)
        temp = 80 + 5 * m + 3 * np.sin(phase) + rng.normal(0, 0.3, steps)
        pressure = 2 + 0.1 * m + 0.2 * np.cos(phase) + rng.normal(0, 0.02, steps)
        for i, when in enumerate(times):
            shown = "#N/A" if count % MISSING_EVERY == 7 else decimal_comma(temp[i])
            lines.append(f"{when};{machine};{shown};{decimal_comma(pressure[i])}")
            count += 1
    path.write_text("\n".join(lines) + "\n", encoding="cp1252")
    return count


def test_a_historian_export_trains_with_flags_alone_and_scores_through_the_flow(
    prefect_server: dict[str, str], tmp_path: Path
) -> None:
    readings = historian_csv(tmp_path / "historian.csv")
    repeated = [t for t in local_times(432) if t.startswith("25.10.2026 02:")]
    assert len(repeated) == 12 and len(set(repeated)) == 6  # the hour the clocks go back, twice
    vad = str(Path(sys.executable).with_name("vad"))

    trained = subprocess.run(
        [vad, "train", str(tmp_path / "historian.csv"), *FLAGS, "--name", "plant", "--epochs", "2"]
        + ["--out", str(tmp_path / "models"), "--no-progress", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    result = json.loads(trained.stdout)
    assert result["merged"] == 0  # no reading of the repeated hour dropped or blended
    assert result["imputed"] == {"temp_in": sum(1 for i in range(readings) if i % MISSING_EVERY == 7)}

    scored = subprocess.run(
        [vad, "score", str(tmp_path / "models" / "plant"), str(tmp_path / "historian.csv")]
        + ["--output", str(tmp_path / "scores.parquet"), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert json.loads(scored.stdout)["rows"] == readings

    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    drop_into(inbox, tmp_path / "historian.csv")
    flow = subprocess.run(
        score_command(inbox, outbox, tmp_path / "models" / "plant", ["prefect-event"]),
        env=prefect_server,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert flow.returncode == 0, flow.stderr[-3000:]
    (batch,) = open_ledger(outbox).batches()
    assert batch["status"] == "done"
    by_flow, by_cli = pl.read_parquet(batch["output"]), pl.read_parquet(tmp_path / "scores.parquet")
    assert by_flow.height == readings and by_flow["time"].n_unique() == 432  # UTC: the repeated hour is two hours
    assert by_flow.select("machine", "time", "score").equals(by_cli.select("machine", "time", "score"))
