"""Four processes released at the same instant race over one inbox with the library's own
steps (find, claim, score, complete): every batch is scored by exactly one of them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest
from common import DATA, ROOT

from pipeline.ops.inbox import open_ledger

WORKER = textwrap.dedent("""
    import sys, time
    from pipeline.ops import inbox
    from pipeline.runtime import Scorer
    inbox_dir, outbox, model, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    scorer = Scorer.load(model)
    ledger = inbox.open_ledger(outbox)
    time.sleep(max(0.0, start - time.time()))  # every worker is released at the same instant
    for batch in inbox.find_batches(inbox_dir, ledger):
        if ledger.claim(batch.identity, scorer.manifest.key, batch.file).granted:
            summary = inbox.score_batch(scorer, batch, outbox)
            ledger.complete(batch.identity, scorer.manifest.key, summary.output, summary.model_dump())
""")


@pytest.mark.slow  # four processes, each loading the model
def test_four_racing_processes_score_every_batch_exactly_once(sensor_model: Path, tmp_path: Path) -> None:
    history = pl.read_parquet(DATA / "sensors" / "history.parquet")
    inbox_dir, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox_dir.mkdir()
    for i, machine in enumerate(history.partition_by("machine")):
        for j in range(10):
            machine.slice(j * 100, 100).write_parquet(inbox_dir / f"m{i}-{j:02d}.parquet")
    start = time.time() + 8.0  # after every worker has imported and loaded the model
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(inbox_dir), str(outbox), str(sensor_model), str(start)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    errors = [w.communicate(timeout=180)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, "\n".join(errors)

    batches = open_ledger(outbox).batches()
    assert len(batches) == 40 and {b["status"] for b in batches} == {"done"}
    assert {b["claims"] for b in batches} == {1}  # no batch was claimed (and scored) twice
    assert len({b["owner"] for b in batches}) > 1  # the workers really overlapped
    assert len(list((outbox / "scores").rglob("*.parquet"))) == 40
