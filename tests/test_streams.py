"""A stream is one stream however it arrives (issue 45): the demo sensor batch scored whole and
as consecutive batches per machine, through the functions the scheduled flow calls, with the
ledger's stream state between batches, gives the same scores, flags and alarms; and the review's
findings R22, R24, R28 and R47 (reliability round 4), each by its id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from common import DATA

from pipeline.artifact import contract
from pipeline.core.config import AlertRules
from pipeline.ops import alerts, inbox
from pipeline.ops.records import BatchRef
from pipeline.runtime import EntityState, ScoreOptions, Scorer, StreamStates
from pipeline.runtime.steps import PADDED_MARGIN, time_seconds

KEYS = ["machine", "timestamp"]
OPTIONS = ScoreOptions()


@pytest.fixture(scope="module")
def scorer(sensor_model: Path) -> Scorer:
    return Scorer.load(sensor_model)


@pytest.fixture(scope="module")
def batch() -> pl.DataFrame:
    return pl.read_parquet(DATA / "sensors" / "batch.parquet").sort(KEYS)


def cut(frame: pl.DataFrame, rows: int) -> list[pl.DataFrame]:
    """Consecutive batches of `rows` rows per machine, as a frequent schedule delivers them."""
    numbered = frame.with_columns((pl.int_range(pl.len()).over("machine") // rows).alias("_batch"))
    return [part.drop("_batch") for _, part in numbered.group_by("_batch", maintain_order=True)]


def through_the_ledger(scorer: Scorer, batches: list[pl.DataFrame], folder: Path, order: list[int] | None = None):
    """Each batch written to a file, claimed, scored and completed as the scheduled flow does
    (`inbox.score_and_judge`, `Ledger.complete`), in `order`; the scores of every batch."""
    folder.mkdir(parents=True)
    ledger = inbox.open_ledger(folder / "outbox")
    outputs = {}
    for i in order if order is not None else range(len(batches)):
        path = folder / f"batch-{i:04d}.parquet"
        batches[i].write_parquet(path)
        (found,) = [b for b in inbox.find_batches(path, ledger)]
        assert ledger.claim(found.identity, scorer.manifest.key, found.file).granted
        judged = inbox.score_and_judge(ledger, scorer, found, folder / "outbox", AlertRules())
        ledger.complete(found.identity, scorer.manifest.key, judged.summary.output, judged.summary.model_dump(mode="json"))
        outputs[i] = pl.read_parquet(judged.summary.output)
    return pl.concat([outputs[i] for i in range(len(batches))]).sort(KEYS), ledger


def assert_same_stream(whole: pl.DataFrame, pieces: pl.DataFrame) -> None:
    assert pieces.height == whole.height
    np.testing.assert_allclose(pieces["score"].to_numpy(), whole["score"].to_numpy(), rtol=1e-6)
    for column in (contract.IS_ANOMALY, contract.ALARM, contract.JUDGED):
        assert pieces[column].to_list() == whole[column].to_list(), column


def test_R22_a_stream_in_batches_of_12_rows_per_machine_flags_what_it_flags_whole(
    scorer: Scorer, batch: pl.DataFrame, tmp_path: Path
) -> None:
    """The review measured 831 of 894 flags lost in 12-row batches: no window context crossed a
    batch. Now each machine's last rows, window scores and counts travel in the ledger."""
    whole = scorer.score(batch).sort(KEYS)
    assert whole["is_anomaly"].sum() > 800 and whole["alarm"].sum() > 0
    pieces, ledger = through_the_ledger(scorer, cut(batch.head(1400), 12), tmp_path / "twelve")
    assert_same_stream(scorer.score(batch.head(1400)).sort(KEYS), pieces)
    states = ledger.states_before(scorer.manifest.key, {"press-01": float("inf")})
    assert states["press-01"].rows.shape == (scorer.schema.window.length - 1, len(scorer.schema.row_features))


def test_the_stream_state_is_the_same_in_memory_and_at_every_batch_size(scorer: Scorer, batch: pl.DataFrame) -> None:
    whole = scorer.score(batch).sort(KEYS)
    for rows in (1, 7, 48, 500):
        stream, scored = StreamStates(), []
        for part in cut(batch, rows) if rows > 1 else cut(batch.head(400), 1):
            out, _ = scorer.score_prepared(scorer.prepare(part), OPTIONS, stream=stream)
            scored.append(out)
        expected = whole if rows > 1 else scorer.score(batch.head(400)).sort(KEYS)
        assert_same_stream(expected, pl.concat(scored).sort(KEYS))


def test_a_state_survives_its_text_exactly() -> None:
    state = EntityState(
        end=1.5e9,
        span_rows=40,
        rows=np.array([[0.1, np.float32(1e-7)], [3.0, -2.5]], np.float32),
        window_scores=np.array([np.inf, 101.23456], np.float32),
        step_scores=np.array([np.nan, 1 / 3]),
        since_alarm=4,
        since_flag=None,
    )
    back = EntityState.from_json(state.to_json())
    assert back.rows.tobytes() == state.rows.tobytes() and back.window_scores.tobytes() == state.window_scores.tobytes()
    assert np.isnan(back.step_scores[0]) and back.step_scores[1] == 1 / 3
    assert (back.end, back.span_rows, back.since_alarm, back.since_flag) == (1.5e9, 40, 4, None)


def test_a_gap_longer_than_max_gap_restarts_the_windows_as_the_whole_stream_does(sensor_model: Path) -> None:
    scorer = Scorer.load(sensor_model)
    scorer.schema = scorer.schema.model_copy(update={"max_gap": timedelta(hours=1)})
    press = pl.read_parquet(DATA / "sensors" / "batch.parquet").filter(pl.col("machine") == "press-01").sort("timestamp")
    parts = [press.head(300), press.slice(300, 100).with_columns(pl.col("timestamp").dt.offset_by("2d"))]
    stream, scored = StreamStates(), []
    for part in parts:
        scored.append(scorer.score_prepared(scorer.prepare(part), OPTIONS, stream=stream)[0])
    assert stream.latest["press-01"].span_rows == 100  # the span restarted at the gap
    whole = scorer.score(pl.concat(parts))
    assert_same_stream(whole, pl.concat(scored))
    assert (~whole["judged"]).sum() >= 2 * (scorer.schema.window.length - 1) - whole["is_anomaly"].sum()


def test_R24_a_series_shorter_than_its_window_still_flags_a_reading_that_breaks_the_scale(
    scorer: Scorer, batch: pl.DataFrame
) -> None:
    """5 rows with a last motor_temp of 1e300 scored 4.0e8 against 101.6 and were not flagged.
    A padded window's score is judged against a wide margin; below it, the row is marked unjudged."""
    press = batch.filter(pl.col("machine") == "press-01")
    rule = scorer.step_rule()
    for value in (1e300, 500.0):
        rows = press.head(5).with_columns(
            motor_temp=pl.when(pl.int_range(pl.len()) == 4).then(value).otherwise(pl.col("motor_temp"))
        )
        last = scorer.score(rows).row(4, named=True)
        assert last["score"] > rule.wide_threshold and last["is_anomaly"] and last["judged"] and last["alarm"]
    normal = scorer.score(press.head(5))
    assert not normal["is_anomaly"].any() and not normal["judged"].any()  # padded and unremarkable: not judged
    assert rule.wide_threshold == rule.threshold + PADDED_MARGIN * (rule.threshold - rule.normal)


def test_R24_unjudged_rows_are_counted_in_the_batch_summary(scorer: Scorer, batch: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "short.parquet"
    batch.filter(pl.col("machine") == "press-01").head(5).write_parquet(path)
    ledger = inbox.open_ledger(tmp_path / "outbox")
    (found,) = inbox.find_batches(path, ledger)
    summary = inbox.score_batch(scorer, found, tmp_path / "outbox")
    assert summary.unjudged == 5 and summary.anomalies == 0


def test_R28_batches_finished_out_of_order_are_scored_in_data_time(
    scorer: Scorer, batch: pl.DataFrame, tmp_path: Path
) -> None:
    """A retried batch A went last and B (its successor) was scored first: 5 + 4 alarms
    instead of 5 + 2. The flow now orders waiting batches by data time, and a batch scored late
    continues the state as of its own time."""
    middle = batch["timestamp"].sort()[batch.height // 2]
    halves = [batch.filter(pl.col("timestamp") < middle), batch.filter(pl.col("timestamp") >= middle)]
    in_order, _ = through_the_ledger(scorer, halves, tmp_path / "in-order")
    assert_same_stream(scorer.score(batch).sort(KEYS), in_order)

    folder = tmp_path / "retried"
    folder.mkdir()
    for i, half in enumerate(halves):
        half.write_parquet(folder / f"{'ba'[i]}.parquet")  # A is named b: file order is not stream order
    ledger = inbox.open_ledger(tmp_path / "outbox")
    found = inbox.find_batches(folder, ledger)
    a = next(b for b in found if b.file.endswith("b.parquet"))
    attempts = {a.identity: 1}  # A was claimed once and retried
    ordered = inbox.in_stream_order(found, scorer.schema, attempts)
    assert [Path(b.file).name for b in ordered] == ["b.parquet", "a.parquet"]
    assert inbox.in_stream_order(found, scorer.schema, {a.identity: inbox.DIED_BEFORE})[-1] == a  # a poison batch goes last

    late, _ = through_the_ledger(scorer, halves, tmp_path / "late", order=[1, 0])
    first_half = late.filter(pl.col("timestamp") < middle)
    assert_same_stream(scorer.score(halves[0]).sort(KEYS), first_half)  # the late batch continues the state as of its time


def test_R47_a_batch_from_a_clock_73_years_ahead_pins_neither_cooldown_nor_stream(
    scorer: Scorer, batch: pl.DataFrame, tmp_path: Path
) -> None:
    """One press-01 batch dated +73 years kept 2099 as its cooldown time for good: every later
    real batch paged again. A later real alarm now replaces a kept time past the host's clock."""
    press = batch.filter(pl.col("machine") == "press-01")
    rules = AlertRules(cooldown_minutes=7 * 24 * 60)
    ledger = inbox.open_ledger(tmp_path)
    manifest = scorer.manifest
    paged = []
    frames = [("2099", press.head(600).with_columns(pl.col("timestamp").dt.offset_by("73y")))]
    frames += [("batch 1", press.head(600)), ("batch 2", press.slice(600, 552))]
    for name, frame in frames:
        alert, times = alerts.evaluate(
            scorer.score(frame),
            manifest,
            rules,
            BatchRef(file=name, sha256=name),
            last_alerts=ledger.last_alert_times(manifest.name),
        )
        if alert is not None:
            ledger.record_alert(alert.alert_id, name, manifest.key, alert.model_dump(mode="json"), manifest.name, times)
            paged.append(name)
    assert paged == ["2099", "batch 1"]  # batch 2 continues batch 1's fault: cooling down
    kept = datetime.fromisoformat(ledger.last_alert_times(manifest.name)["press-01"])
    assert kept.replace(tzinfo=UTC) < datetime.now(UTC)

    stream = StreamStates()
    for _, frame in frames:
        scorer.score_prepared(scorer.prepare(frame), OPTIONS, stream=stream)
    state = stream.before({"press-01": float(time_seconds(press["timestamp"])[600])})["press-01"]
    assert state.span_rows == 600  # the 2099 state stands before no real batch


def test_R47_a_burst_of_batches_from_the_future_evicts_no_real_state(tmp_path: Path) -> None:
    """The ledger keeps each entity's newest states; states dated past the host's clock are
    kept apart, so 40 batches from a clock 73 years ahead leave the real history in place."""
    ledger = inbox.open_ledger(tmp_path)
    now = datetime.now(UTC).timestamp()

    def state(end: float) -> EntityState:
        empty = np.zeros(0, np.float32)
        return EntityState(end, 1, np.zeros((0, 1), np.float32), empty, empty.astype(float))

    batches = [(f"real-{i}", now - 3600 * (50 - i)) for i in range(40)] + [
        (f"ahead-{i}", now + 2.3e9 + i) for i in range(40)
    ]
    for identity, end in batches:
        ledger.claim(identity, "m/1", identity)
        ledger.stage_states(identity, "m/1", {"press-01": state(end)})
        ledger.complete(identity, "m/1", "", {})
    assert ledger.states_before("m/1", {"press-01": now})["press-01"].end == batches[39][1]  # the newest real one
    assert ledger.states_before("m/1", {"press-01": now - 3600 * 30})["press-01"].end == now - 3600 * 31
