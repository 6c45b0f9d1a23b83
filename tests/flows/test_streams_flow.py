"""A stream delivered to the real scheduled flow (a local Prefect server) in 12-row batches per
machine flags exactly what `vad score` flags on the whole file, and pages once per episode;
so it does with the batches delivered out of order (issue 45, must-show 2)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from prefect_helpers import DATA, ROOT
from test_crash_recovery import run_scoring

from pipeline.core.config import AlertRules
from pipeline.ops import alerts
from pipeline.ops.inbox import open_ledger
from pipeline.runtime import Scorer

pytestmark = pytest.mark.slow
ROWS_PER_MACHINE, BATCH = 720, 12  # 60 batches of 4 machines × 12 rows; the demo's 7 episodes start in them
KEYS = ["machine", "timestamp"]


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[pl.DataFrame]]:
    """The demo batch's first hours, whole (one file) and cut into consecutive 12-row batches per machine."""
    folder = tmp_path_factory.mktemp("stream")
    rows = pl.read_parquet(DATA / "sensors" / "batch.parquet").drop("label", "anomaly_kind").sort(KEYS)
    rows = rows.filter(pl.int_range(pl.len()).over("machine") < ROWS_PER_MACHINE)
    rows.write_parquet(folder / "whole.parquet")
    numbered = rows.with_columns((pl.int_range(pl.len()).over("machine") // BATCH).alias("_batch"))
    return folder / "whole.parquet", [part.drop("_batch") for _, part in numbered.group_by("_batch", maintain_order=True)]


def whole_file_scores(whole: Path, model: Path, folder: Path) -> pl.DataFrame:
    """`vad score` on the whole file, as a user runs it."""
    output = folder / "whole-scores.parquet"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("vad")), "score", str(model), str(whole), "--output", str(output)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return pl.read_parquet(output).sort(KEYS)


def expected_pages(whole: pl.DataFrame, rules: AlertRules) -> set[tuple[str, str]]:
    """(machine, time) of every episode the whole stream confirms, less those inside the
    cooldown (data time) of the machine's page before."""
    pages = set()
    for (machine,), rows in whole.partition_by("machine", as_dict=True, maintain_order=True).items():
        last: datetime | None = None
        for row in alerts.confirmations(rows["is_anomaly"].to_numpy(), rows["alarm"].to_numpy(), rules):
            moment = rows["timestamp"][row]
            if last is None or moment - last >= timedelta(minutes=rules.cooldown_minutes):
                pages.add((machine, moment.isoformat()))
                last = moment
    return pages


def deliver(batches: list[pl.DataFrame], inbox: Path, shuffled: bool) -> None:
    """Every batch into the inbox at once; shuffled: names and modification times in random
    order, so neither says which batch comes first."""
    inbox.mkdir(parents=True)
    order = list(range(len(batches)))
    if shuffled:
        random.Random(45).shuffle(order)
    for position, i in enumerate(order):
        path = inbox / f"batch-{position:03d}.parquet"
        batches[i].write_parquet(path)
        os.utime(path, ns=(1_700_000_000_000_000_000 + position, 1_700_000_000_000_000_000 + position))


@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "out-of-order"])
def test_a_stream_in_12_row_batches_through_the_flow_flags_and_pages_as_the_whole_file(
    prefect_server: dict[str, str],
    stream: tuple[Path, list[pl.DataFrame]],
    sensor_model: Path,
    tmp_path: Path,
    shuffled: bool,
) -> None:
    whole_path, batches = stream
    whole = whole_file_scores(whole_path, sensor_model, tmp_path)
    assert whole["alarm"].sum() >= 5 and whole["is_anomaly"].sum() > 300

    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    deliver(batches, inbox, shuffled)
    run = run_scoring(prefect_server, inbox, outbox, sensor_model, "prefect-event")
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(json.loads(run.stdout.strip().splitlines()[-1])["scored"]) == len(batches)

    key = Scorer.load(sensor_model).manifest.key
    scored = pl.concat([pl.read_parquet(f) for f in (outbox / "scores" / key).glob("*.parquet")]).sort(KEYS)
    assert scored.height == whole.height
    for column in ("is_anomaly", "alarm", "judged"):
        assert scored[column].to_list() == whole[column].to_list(), column
    assert (scored["score"] - whole["score"]).abs().max() <= 1e-6 * whole["score"].abs().max()

    paged = {
        (entity["entity"], entity["first_alarm"])
        for alert in open_ledger(outbox).alerts()
        for entity in alert["payload"]["entities"]
    }
    assert paged == expected_pages(whole, AlertRules()) and len(paged) >= 4  # one page per episode
