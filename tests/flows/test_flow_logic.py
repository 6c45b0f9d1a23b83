"""The scoring flow's logic in this process: Prefect's test harness (a temporary server of its
own), the flow called as a function, the ledger and the alerts read back directly. Faster than
the deployment tests beside it, which keep the real server, the worker and the schedule."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from flows.score import score_flow
from pipeline.core.config import AlertRules
from pipeline.ops import inbox
from pipeline.ops.records import BatchRef
from pipeline.runtime import Scorer


@pytest.fixture(scope="module")
def harness() -> None:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def folders(tmp_path: Path, inbox_batches: dict[str, Path]) -> tuple[Path, Path]:
    incoming, outbox = tmp_path / "inbox", tmp_path / "outbox"
    incoming.mkdir()
    for path in inbox_batches.values():
        shutil.copy(path, incoming / path.name)
    return incoming, outbox


def test_each_batch_is_scored_once_and_only_the_fault_alerts(harness, folders, sensor_model: Path) -> None:
    incoming, outbox = folders
    first = score_flow(inbox_path=str(incoming), outbox=str(outbox), model=str(sensor_model), sinks=["prefect-event"])
    scored = {Path(s["file"]).name: s for s in first["scored"]}
    assert set(scored) == {"normal.parquet", "faulty.parquet"}
    assert len(first["alerts"]) == 1
    alert = inbox.open_ledger(str(outbox)).get_alert(first["alerts"][0])
    assert alert is not None and alert["batch"]["file"].endswith("faulty.parquet")
    faulty = pl.read_parquet(scored["faulty.parquet"]["output"])
    assert faulty["is_anomaly"].sum() > scored["normal.parquet"]["anomalies"]

    again = score_flow(inbox_path=str(incoming), outbox=str(outbox), model=str(sensor_model), sinks=["prefect-event"])
    assert again["scored"] == [] and again["alerts"] == []  # the ledger remembers both batches


def test_a_run_opens_the_ledger_once_and_judges_alerts_without_reading_its_scores_back(
    harness, folders, sensor_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Design review: each batch reopened the ledger 4 to 6 times and read the scores file it
    had just written to judge its alert. Now one ledger serves the run and the alert is judged
    on the chunks as they were written: only the run's report (one figure over every batch)
    reads the scores files, once each, at the end; the alert is the one the file gives."""
    import inspect

    from pipeline.ops import alerts
    from pipeline.ops.ledger import Ledger

    incoming, outbox = folders
    opened: list[Path] = []
    reads: list[tuple[str, str]] = []  # (file, the flow task reading it)
    ledger_init, read_parquet = Ledger.__init__, pl.read_parquet

    def counted_init(self: Ledger, path: Path, *args: object, **kwargs: object) -> None:
        opened.append(Path(path))
        ledger_init(self, path, *args, **kwargs)

    def counted_read(source: object, *args: object, **kwargs: object) -> pl.DataFrame:
        if isinstance(source, str | Path) and (outbox / "scores") in Path(source).parents:
            callers = {frame.function for frame in inspect.stack()}
            reads.append((Path(source).name, "publish_reports" if "publish_reports" in callers else "elsewhere"))
        return read_parquet(source, *args, **kwargs)

    monkeypatch.setattr(Ledger, "__init__", counted_init)
    monkeypatch.setattr(pl, "read_parquet", counted_read)
    done = score_flow(inbox_path=str(incoming), outbox=str(outbox), model=str(sensor_model), sinks=["prefect-event"])
    monkeypatch.undo()

    assert len(done["scored"]) == 2 and len(done["alerts"]) == 1
    assert opened == [outbox / inbox.LEDGER_FILE]
    assert sorted(reads) == sorted((Path(s["output"]).name, "publish_reports") for s in done["scored"])
    ledger = inbox.open_ledger(outbox)
    recorded = ledger.get_alert(done["alerts"][0])
    faulty = next(s for s in done["scored"] if s["file"].endswith("faulty.parquet"))
    from_file, _ = alerts.evaluate(
        pl.read_parquet(faulty["output"]),
        Scorer.load(sensor_model).manifest,
        AlertRules(),
        BatchRef(file="faulty.parquet", sha256=recorded["batch"]["sha256"]),
        last_alerts={},
        threshold=faulty["threshold"],
    )
    assert from_file is not None
    assert recorded == {**from_file.model_dump(mode="json"), "output": faulty["output"]}


def test_a_run_loads_the_model_once(harness, folders, sensor_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Design review (issue 49): the flow's model cache was keyed two ways, `_scorer(d, p)` and
    `_scorer(d, p, None)`, so every run loaded and checked the model twice."""
    from flows import score

    score._loaded.cache_clear()
    loads: list[str] = []
    load = Scorer.load

    def counted(path: object, *args: object, **kwargs: object) -> Scorer:
        loads.append(str(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(Scorer, "load", counted)
    incoming, outbox = folders
    done = score_flow(inbox_path=str(incoming), outbox=str(outbox), model=str(sensor_model), sinks=["prefect-event"])
    assert len(done["scored"]) == 2 and loads == [str(sensor_model)]


def test_a_bad_batch_fails_the_run_but_not_the_other_batches(harness, folders, sensor_model: Path) -> None:
    incoming, outbox = folders
    (incoming / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(Exception, match="1 batch\\(es\\) could not be scored: broken.parquet"):
        score_flow(inbox_path=str(incoming), outbox=str(outbox), model=str(sensor_model), sinks=["prefect-event"])
    ledger = inbox.open_ledger(str(outbox))
    states = {Path(row["file"]).name: row["status"] for row in ledger.batches()}
    assert states == {"normal.parquet": "done", "faulty.parquet": "done", "broken.parquet": "failed"}


def test_a_gap_fails_its_batch_unless_the_flow_imputes(
    harness, tmp_path: Path, inbox_batches: dict[str, Path], sensor_model: Path
) -> None:
    incoming = tmp_path / "inbox"
    incoming.mkdir()
    batch = pl.read_parquet(inbox_batches["normal"])
    batch.with_columns(load=pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col("load"))).write_parquet(
        incoming / "gap.parquet"
    )
    with pytest.raises(Exception, match="gap.parquet: .*missing value"):
        score_flow(inbox_path=str(incoming), outbox=str(tmp_path / "strict"), model=str(sensor_model), sinks=[])
    done = score_flow(
        inbox_path=str(incoming), outbox=str(tmp_path / "imputing"), model=str(sensor_model), sinks=[], missing="impute"
    )
    assert [s["rows"] for s in done["scored"]] == [batch.height] and "imputed load: 1" in done["scored"][0]["inputs"]


def test_a_fleet_batch_where_one_machine_repeats_an_hour_is_scored_for_the_others(
    harness, tmp_path: Path, inbox_batches: dict[str, Path], sensor_model: Path
) -> None:
    """One machine's clock change fails that machine alone: the batch is done, not failed,
    the other machine is scored, and the summary says which machine was left out and why."""
    incoming = tmp_path / "inbox"
    incoming.mkdir()
    batch = pl.read_parquet(inbox_batches["normal"])
    other = batch.with_columns(machine=pl.lit("press-99"))
    pl.concat([batch, other, other.slice(40, 1)]).write_parquet(incoming / "fleet.parquet")
    done = score_flow(inbox_path=str(incoming), outbox=str(tmp_path / "outbox"), model=str(sensor_model), sinks=[])
    [summary] = done["scored"]
    assert summary["rows"] == batch.height and list(summary["failed_entities"]) == ["press-99"]
    assert "appears twice" in summary["failed_entities"]["press-99"]
    states = [row["status"] for row in inbox.open_ledger(str(tmp_path / "outbox")).batches()]
    assert states == ["done"]
    scored = pl.read_parquet(summary["output"])
    assert scored["machine"].unique().to_list() == [batch["machine"][0]]


def test_a_sensor_level_shift_raises_a_drift_alert_naming_it_and_an_unshifted_batch_none(
    harness, tmp_path: Path, inbox_batches: dict[str, Path], sensor_model: Path
) -> None:
    """The unshifted batch raises no drift alert; the one whose pressure reads 2 SD high raises
    one (its own kind and event), naming pressure, once across re-runs; the run's drift
    artifact holds the figure and both batches' figures."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    incoming = tmp_path / "inbox"
    incoming.mkdir()
    normal = pl.read_parquet(inbox_batches["normal"])
    normal.write_parquet(incoming / "normal.parquet")
    normal.with_columns(pl.col("pressure") + 2 * normal["pressure"].std()).write_parquet(incoming / "shifted.parquet")
    outbox = tmp_path / "outbox"
    done = score_flow(inbox_path=str(incoming), outbox=str(outbox), model=str(sensor_model), sinks=["prefect-event"])
    by_file = {Path(s["file"]).name: s for s in done["scored"]}
    assert by_file["normal.parquet"]["drift"]["drifting"] == []
    assert by_file["shifted.parquet"]["drift"]["drifting"] == ["pressure"]
    [drift_id] = done["drift_alerts"]
    alert = inbox.open_ledger(str(outbox)).get_alert(drift_id)
    assert alert is not None and alert["kind"] == "drift" and alert["batch"]["file"] == "shifted.parquet"
    assert list(alert["entities"]) == [normal["machine"][0]] and "pressure" in alert["entities"][normal["machine"][0]]
    assert inbox.open_ledger(str(outbox)).delivered(drift_id, "prefect-event")
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["vad-drift"])))
    assert any(
        "data:image/png;base64," in a.data and "| shifted.parquet | 300 | pressure" in a.data for a in artifacts
    )  # other tests of this module's server may have written theirs
    again = score_flow(
        inbox_path=str(incoming), outbox=str(outbox), model=str(sensor_model), sinks=["prefect-event"], force=True
    )
    assert again["drift_alerts"] == [drift_id]  # the same alert, re-read, not a second one


def test_n11_one_drift_alert_per_drift_episode(
    harness, tmp_path: Path, inbox_batches: dict[str, Path], sensor_model: Path
) -> None:
    """N11: drift alerts had no cooldown, so a machine that stayed drifted raised a drift warning
    at every sink on every batch. Now a batch alerts only when something starts drifting; a
    batch without drift ends the episode, and the next drift alerts again."""
    incoming = tmp_path / "inbox"
    incoming.mkdir()
    normal = pl.read_parquet(inbox_batches["normal"])
    for name, sds in [("a-shift", 2.0), ("b-shift", 2.1), ("c-normal", 0.0), ("d-shift", 2.2)]:  # pressure's shift
        normal.with_columns(pl.col("pressure") + sds * normal["pressure"].std()).write_parquet(incoming / f"{name}.parquet")
    done = score_flow(
        inbox_path=str(incoming), outbox=str(tmp_path / "outbox"), model=str(sensor_model), sinks=["prefect-event"]
    )
    ledger = inbox.open_ledger(str(tmp_path / "outbox"))
    drifted = {Path(s["file"]).stem for s in done["scored"] if s["drift"]["drifting"]}
    alerted = {ledger.get_alert(i)["batch"]["file"].removesuffix(".parquet") for i in done["drift_alerts"]}
    assert drifted == {"a-shift", "b-shift", "d-shift"}
    assert alerted == {"a-shift", "d-shift"}  # b-shift continues a-shift's episode; c-normal ended it


def test_a_lost_ledger_is_refused_then_rebuilt_from_the_outbox(harness, folders, sensor_model: Path) -> None:
    """An empty new ledger would score every batch again and send every alert again. The run
    refuses; `rebuild` records the batches whose scores are in the outbox as done instead."""
    incoming, outbox = folders
    run = dict(inbox_path=str(incoming), outbox=str(outbox), model=str(sensor_model), sinks=["prefect-event"])
    first = score_flow(**run)
    assert len(first["scored"]) == 2 and len(first["alerts"]) == 1
    (outbox / "ledger.sqlite").unlink()
    with pytest.raises(Exception, match="holds 2 scored batch\\(es\\) but no ledger"):
        score_flow(**run)
    rebuilt = score_flow(**run, rebuild=True)
    assert rebuilt["scored"] == [] and rebuilt["alerts"] == []  # nothing scored or alerted twice
    assert [(b["status"], b["summary"]) for b in inbox.open_ledger(str(outbox)).batches()] == [
        ("done", '{"rebuilt": true}')
    ] * 2


def test_p22a_n41_a_ledger_truncated_to_nothing_is_refused_like_a_lost_one(harness, folders, sensor_model: Path) -> None:
    """P22a/N41: a ledger truncated to 0 bytes (or replaced by an empty database) was taken for
    a new one, and the next run scored every batch and sent every alert again."""
    incoming, outbox = folders
    run = dict(inbox_path=str(incoming), outbox=str(outbox), model=str(sensor_model), sinks=["prefect-event"])
    assert len(score_flow(**run)["scored"]) == 2
    (outbox / "ledger.sqlite").write_bytes(b"")
    with pytest.raises(Exception, match="holds 2 scored batch\\(es\\) but an empty ledger"):
        score_flow(**run)
    assert (outbox / "ledger.sqlite").stat().st_size == 0  # refused before anything was written to it
    rebuilt = score_flow(**run, rebuild=True)
    assert rebuilt["scored"] == [] and rebuilt["alerts"] == []


def test_p12_scored_files_move_to_the_archive_and_later_runs_find_none(harness, folders, sensor_model: Path) -> None:
    """P12: done files stayed in the inbox for ever. With `archive`, a scored batch's file moves
    out, and files scored before archiving was asked for move on the next run."""
    incoming, outbox = folders
    run = dict(inbox_path=str(incoming), outbox=str(outbox), model=str(sensor_model), sinks=[])
    score_flow(**run, archive=None)
    pl.read_parquet(incoming / "normal.parquet").head(200).write_parquet(incoming / "late.parquet")
    with pytest.raises(Exception, match="inside the inbox"):
        score_flow(**run, archive=str(incoming / "done"))
    archived = score_flow(**run, archive=str(incoming.parent / "done"))
    assert [Path(s["file"]).name for s in archived["scored"]] == ["late.parquet"]
    assert sorted(p.name for p in incoming.iterdir()) == []
    assert sorted(p.name for p in (incoming.parent / "done").iterdir()) == [
        "faulty.parquet",
        "late.parquet",
        "normal.parquet",
    ]


def test_a_damaged_ledger_is_one_clear_error(harness, folders, sensor_model: Path) -> None:
    incoming, outbox = folders
    outbox.mkdir()
    (outbox / "ledger.sqlite").write_bytes(b"this is not a database, it was truncated and overwritten" * 20)
    with pytest.raises(Exception, match="ledger .* cannot be read .*damaged.*--rebuild-ledger"):
        score_flow(inbox_path=str(incoming), outbox=str(outbox), model=str(sensor_model), sinks=[])


@pytest.mark.slow  # the full disk is retried with its real backoff (2 + 4 + 8 s)
def test_a_batch_that_fails_at_its_alert_does_not_hold_up_the_others(
    harness, folders, sensor_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills as the faulty batch's alert is recorded (injected ENOSPC): that batch is
    left to the next run, the normal one is done, and the next run raises the alert once."""
    from pipeline.core.faults import FULL_ENV

    incoming, outbox = folders
    run = dict(inbox_path=str(incoming), outbox=str(outbox), model=str(sensor_model), sinks=["prefect-event"])
    monkeypatch.setenv(FULL_ENV, "alert")
    with pytest.raises(Exception, match="faulty.parquet: .*No space left on device"):
        score_flow(**run)
    ledger = inbox.open_ledger(str(outbox))
    assert {Path(b["file"]).name: b["status"] for b in ledger.batches()} == {
        "faulty.parquet": "retry",
        "normal.parquet": "done",
    }
    monkeypatch.delenv(FULL_ENV)
    again = score_flow(**run)
    assert [Path(s["file"]).name for s in again["scored"]] == ["faulty.parquet"] and len(again["alerts"]) == 1
    assert len(ledger.alerts()) == 1  # one anomaly alert; a sensor stuck for a fifth of the batch is not drift


def test_scoring_tasks_retry_what_time_can_mend_and_not_a_bad_batch() -> None:
    """A bad batch waited out 14 s of backoff (three retries) before it failed the same way."""
    import errno
    import sqlite3

    from prefect.states import Failed

    from flows.score import IO_RETRIES, only_transient
    from pipeline.core.errors import DataError

    assert IO_RETRIES["retry_condition_fn"] is only_transient
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = sqlite3.SQLITE_BUSY  # as sqlite3 sets it on a real lock
    for mendable in (OSError(errno.ENOSPC, "No space left on device"), locked, ConnectionError("reset")):
        assert only_transient(None, None, Failed(data=mendable)), mendable
    for own_fault in (DataError("column 'load' has a missing value"), FileNotFoundError("gone"), ValueError("x")):
        assert not only_transient(None, None, Failed(data=own_fault)), own_fault
