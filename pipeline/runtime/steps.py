"""The step rule: from the scores of the windows ending at each step to each step's score, flag
and alarm, for training's calibration and for scoring alike, and the per-entity state that
makes a stream cut into batches give what it gives whole.

A step's result depends on what came before it in its series: the window ending at it holds
the last `length - 1` rows, the `mean` window rule averages the last `length` windows'
scores, persistence counts the last `n` exceedances, and an episode's hold-off and quiet
count rows since the last alarm and flag. `EntityState` holds exactly that, as an entity's
stream stood after its last row; scoring a batch from it is scoring the batch as the
continuation of the stream (`StepRule.judge`). Rows are counted, not timed, as the whole
stream counts them. Shape learned from Merlion's `post_rule` (calibration, threshold, alarm
in one object that travels with the model)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from pipeline.core.config import AlarmRule, Persistence, WindowSpec
from pipeline.data.schema import FeatureSchema
from pipeline.data.windows import WindowIndex, series_bounds

Span = tuple[int, int]  # [start, stop) rows of a batch
# A step scored on a padded window (an entity's first `length - 1` rows, before a full window
# exists) is flagged only past the threshold by this many times the threshold's margin over the
# normal score: a history that never happened scores high, but a reading that breaks the scale
# (R24: 1e300, 500 °C) must not pass as normal. bench/NOTES.md, 2026-12-07, has how it was chosen.
PADDED_MARGIN = 10.0
# Flags an entity's state keeps (across its spans): what an alert rule that counts flagged rows
# within a window of rows (AlertRules.within, at most this) needs from before a batch.
RECENT_FLAGS = 256


@dataclass(frozen=True)
class EntityState:
    """Where an entity's stream stood after its last row: all a later row's result depends on.

    `rows`, `window_scores` and `step_scores` belong to the entity's current span (since its
    first row, or since its last gap longer than the schema's `max_gap`), oldest first: the
    last `min(span_rows, length - 1)` model-input rows and the scores of the windows ending at
    them, and the last `min(span_rows, n - 1)` step scores. `since_alarm` and `since_flag`
    count the rows since the entity's last alarm and last flagged row (None: none yet)."""

    end: float  # the data time of its last row (seconds, as `time_seconds` reads it)
    span_rows: int
    rows: np.ndarray  # float32, rows × inputs per row
    window_scores: np.ndarray  # float32
    step_scores: np.ndarray  # float64
    since_alarm: int | None = None
    since_flag: int | None = None
    recent_flags: str = ""  # the entity's last RECENT_FLAGS flags, oldest first ("0"/"1")

    def to_json(self) -> str:
        """Exact text: float32 and float64 values survive the round trip, ±inf and NaN too."""
        return json.dumps(
            {
                "end": self.end,
                "span_rows": self.span_rows,
                "rows": self.rows.tolist(),
                "width": int(self.rows.shape[1]) if self.rows.ndim == 2 else 0,
                "window_scores": self.window_scores.tolist(),
                "step_scores": self.step_scores.tolist(),
                "since_alarm": self.since_alarm,
                "since_flag": self.since_flag,
                "recent_flags": self.recent_flags,
            }
        )

    def restarted(self) -> EntityState:
        """The state for a span that starts again after a gap: no rows or scores to continue,
        the counts since the last alarm and flag kept (they count the entity's rows)."""
        empty = np.zeros(0, np.float32)
        return replace(self, span_rows=0, rows=self.rows[:0], window_scores=empty, step_scores=empty.astype(np.float64))

    @classmethod
    def from_json(cls, text: str) -> EntityState:
        raw = json.loads(text)
        width = raw["width"]
        rows = np.asarray(raw["rows"], dtype=np.float32).reshape(-1, width) if width else np.zeros((0, 0), np.float32)
        return cls(
            end=float(raw["end"]),
            span_rows=int(raw["span_rows"]),
            rows=rows,
            window_scores=np.asarray(raw["window_scores"], dtype=np.float32),
            step_scores=np.asarray(raw["step_scores"], dtype=np.float64),
            since_alarm=raw["since_alarm"],
            since_flag=raw["since_flag"],
            recent_flags=raw.get("recent_flags", ""),
        )


@dataclass
class Steps:
    """A batch judged step by step, with each entity's state at its end."""

    score: np.ndarray  # float64, each step's score (higher = more anomalous)
    is_anomaly: np.ndarray
    alarm: np.ndarray
    judged: np.ndarray  # False: scored on a padded window and not past its wide margin, so not judged
    states: dict[str, EntityState] = field(default_factory=dict)


@dataclass(frozen=True)
class SeriesLayout:
    """A batch's rows as the step rule sees them: the spans windows run over, each span's
    entity (an index into `entities`), the entities' row bounds, and for each entity the state
    its first span continues (None: it starts afresh)."""

    spans: list[Span]
    span_entity: list[int]
    entities: list[str]
    entity_bounds: list[Span]
    carried: list[EntityState | None]
    end_times: list[float]  # each entity's last row's data time

    def continued(self, span: int) -> EntityState | None:
        """The state span `span` continues: its entity's, when it is the entity's first span."""
        entity = self.span_entity[span]
        first = span == 0 or self.span_entity[span - 1] != entity
        return self.carried[entity] if first else None


@dataclass(frozen=True)
class StepRule:
    """The manifest's rule from window scores to steps: the window rule (`end` or `mean`), the
    padded first steps, the threshold, persistence and alarm onsets. Sensor series only use
    spans and entities; a table's rows are each their own step (`series = False`)."""

    window: WindowSpec | None = None
    threshold: float = math.inf
    normal: float = 0.0  # the median calibration score, for the padded steps' margin
    persistence: Persistence = Persistence()
    alarm: AlarmRule = AlarmRule()
    series: bool = True

    @property
    def length(self) -> int:
        return self.window.length if self.series and self.window is not None else 1

    @property
    def wide_threshold(self) -> float:
        """Where a padded step's score counts as anomalous (PADDED_MARGIN)."""
        return self.threshold + PADDED_MARGIN * max(self.threshold - self.normal, 1e-9)

    # -- scores ---------------------------------------------------------------------------
    def step_scores(self, window_scores: np.ndarray, index: WindowIndex) -> np.ndarray:
        """Windows' scores as their steps' scores, each window placed by where it ends (training
        keeps every `stride`-th window, or a sample of them): under `mean`, the mean score of
        the full windows of its span ending in its last `length` steps, itself included."""
        if not self.series or self.window is None or not self.window.averaged:
            return window_scores
        out = np.asarray(window_scores, dtype=np.float64).copy()
        for start, stop in index.spans:
            at = np.flatnonzero((index.ends >= start) & (index.ends < stop))
            if len(at):
                out[at] = mean_of_last_windows(out[at], index.ends[at] - start, self.length)
        return out.astype(np.asarray(window_scores).dtype)

    # -- a batch --------------------------------------------------------------------------
    def judge(
        self, window_scores: np.ndarray, rows: np.ndarray, layout: SeriesLayout, novel: np.ndarray | None = None
    ) -> Steps:
        """Each step of a batch of sensor rows scored, flagged and alarmed as the continuation of
        its entity's stream (`layout.carried`), and each entity's state at the batch's end.
        `rows` are each step's own model inputs (a window's last step), kept for the next
        batch's windows. Under `unseen = "flag"` the caller passes the rows holding a category
        never seen in training (`novel`), flagged whatever their score."""
        scores = np.asarray(window_scores, dtype=np.float64)
        steps = np.empty_like(scores)
        flagged = np.zeros(len(scores), bool)
        judged = np.ones(len(scores), bool)
        for span, (start, stop) in enumerate(layout.spans):
            seen, _, before, prior = _carried(layout.continued(span))
            steps[start:stop] = self._span_steps(scores[start:stop], seen, before)
            flagged[start:stop], judged[start:stop] = self._span_flags(steps[start:stop], seen, prior)
        if novel is not None:
            flagged |= novel
            judged |= novel
        since = [(state.since_alarm, state.since_flag) if state is not None else (None, None) for state in layout.carried]
        alarms, after = onsets(flagged, layout.entity_bounds, self.alarm.hold_off, self.alarm.quiet, since)
        result = Steps(steps, flagged, alarms, judged)
        for span, (start, stop) in enumerate(layout.spans):
            entity = layout.span_entity[span]
            if span + 1 < len(layout.spans) and layout.span_entity[span + 1] == entity:
                continue  # the entity's state is its last span's
            seen, rows_before, before, prior = _carried(layout.continued(span))
            span_rows = seen + stop - start
            result.states[layout.entities[entity]] = EntityState(
                end=layout.end_times[entity],
                span_rows=span_rows,
                rows=_tail(rows_before, rows[start:stop], self.length - 1, span_rows),
                window_scores=_tail(before, scores[start:stop], self.length - 1, span_rows).astype(np.float32),
                step_scores=_tail(prior, steps[start:stop], self.persistence.n - 1, span_rows),
                since_alarm=after[entity][0],
                since_flag=after[entity][1],
                recent_flags=_recent(layout.carried[entity], flagged[slice(*layout.entity_bounds[entity])]),
            )
        return result

    def _span_steps(self, scores: np.ndarray, seen: int, before: np.ndarray) -> np.ndarray:
        """One span's step scores; `before` are the scores of the windows ending at the span's
        last rows before the batch (there are `seen` of those rows in all)."""
        if self.window is None or not self.window.averaged:
            return scores
        values = np.concatenate([before, scores])
        positions = np.arange(seen - len(before), seen + len(scores))
        return mean_of_last_windows(values, positions, self.length)[len(before) :]

    def _span_flags(self, steps: np.ndarray, seen: int, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One span's flags and which of its steps were judged. Steps on padded windows (the
        span's first `length - 1`) are flagged only past the wide threshold, and are judged
        only then; the others by the threshold and the persistence rule, counting the
        exceedances of the span's last steps before the batch (`prior`)."""
        rule = self.persistence
        exceeds = np.concatenate([prior, steps]) > self.threshold
        if rule.k <= 1:
            flags = exceeds[len(prior) :]
        else:
            flags = persistent(exceeds, [(0, len(exceeds))], rule.k, rule.n)[len(prior) :]
        padded = np.arange(seen, seen + len(steps)) < self.length - 1
        wide = steps > self.wide_threshold
        flags = np.where(padded, wide, flags)
        return flags, ~padded | wide


def _carried(state: EntityState | None) -> tuple[int, np.ndarray | None, np.ndarray, np.ndarray]:
    """What a span continues: its rows before the batch, their inputs, window and step scores."""
    if state is None:
        return 0, None, np.zeros(0), np.zeros(0)
    return state.span_rows, state.rows, state.window_scores.astype(np.float64), state.step_scores


def _recent(state: EntityState | None, flags: np.ndarray) -> str:
    """An entity's last RECENT_FLAGS flags, those held before the batch first."""
    text = (state.recent_flags if state is not None else "") + "".join(
        "1" if flag else "0" for flag in flags[-RECENT_FLAGS:]
    )
    return text[-RECENT_FLAGS:]


def _tail(before: np.ndarray | None, new: np.ndarray, keep: int, span_rows: int) -> np.ndarray:
    """The last `min(keep, span_rows)` values of a span: those held before the batch, then the batch's."""
    joined = new if before is None or not len(before) else np.concatenate([before, new])
    return np.ascontiguousarray(joined[len(joined) - max(0, min(keep, span_rows)) :])


def continued_windows(state: EntityState, rows: np.ndarray, length: int) -> np.ndarray:
    """The windows ending at a continued span's first `length - 1` rows of this batch, built on
    the rows before it (`state.rows`, oldest first): what a padded window stands in for when
    the batch is read alone. A span that began less than `length - 1` rows ago still pads with
    its first row, as the whole stream does."""
    first = min(length - 1, len(rows))
    joined = np.concatenate([state.rows, rows[:first]])
    at = len(state.rows) + np.arange(first)[:, None] + np.arange(-length + 1, 1)[None, :]
    return joined[np.maximum(at, 0)].reshape(first, -1)


def mean_of_last_windows(scores: np.ndarray, positions: np.ndarray, length: int) -> np.ndarray:
    """WindowSpec's `mean` rule over one span: each window (at `positions`, the span rows it
    ends at, ascending) takes the mean score of the span's full windows ending in its last
    `length` rows, itself included. Windows padded with the span's first row (ending in its
    first `length - 1` rows) keep their own score and enter no mean. A +inf or NaN score makes
    the means it enters +inf or NaN, and no others."""
    scores = np.asarray(scores, dtype=np.float64)
    out = scores.copy()
    at = np.flatnonzero(positions >= length - 1)  # full windows, in order
    if not len(at):
        return out
    ends, values = positions[at], scores[at]
    low, high = np.searchsorted(ends, ends - length + 1), np.arange(1, len(at) + 1)
    finite = np.isfinite(values)
    # Running sums, so each mean costs two lookups; the Node example sums in the same order.
    total = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    infinite = np.concatenate([[0], np.cumsum(np.isposinf(values))])
    invalid = np.concatenate([[0], np.cumsum(~finite & ~np.isposinf(values))])
    mean = (total[high] - total[low]) / (high - low)
    mean[infinite[high] > infinite[low]] = np.inf
    mean[invalid[high] > invalid[low]] = np.nan
    out[at] = mean
    return out


def persistent(exceeds: np.ndarray, bounds: list[Span], k: int, n: int) -> np.ndarray:
    """True where at least `k` of the last `n` rows of the same span (itself included) exceed;
    a series' first rows count only the rows it has."""
    flags = np.zeros_like(exceeds)
    for start, stop in bounds:
        counts = np.concatenate([[0], np.cumsum(exceeds[start:stop], dtype=np.int64)])
        ends = np.arange(1, stop - start + 1)
        flags[start:stop] = counts[ends] - counts[np.maximum(ends - n, 0)] >= k
    return flags


Hold = tuple[int | None, int | None]  # an entity's rows since its last alarm and since its last flagged row


def onsets(
    flags: np.ndarray, bounds: list[Span], hold_off: int, quiet: int = 0, since: list[Hold] | None = None
) -> tuple[np.ndarray, list[Hold]]:
    """The alarms among flagged rows, per span: an episode starts at a flagged row that follows
    more than `quiet` rows without a flag, and alarms unless the span alarmed within `hold_off`
    rows before it. One step per alarm, so a long episode costs no more than a short one.
    `since`: each span's rows between its last alarm, and its last flagged row, and the span's
    first row (an earlier batch's; None: none yet). Returns the alarms and the same counts at
    each span's end, for the next batch."""
    alarms = np.zeros_like(flags)
    after: list[Hold] = []
    for span, (start, stop) in enumerate(bounds):
        since_alarm, since_flag = since[span] if since is not None else (None, None)
        flagged = np.flatnonzero(flags[start:stop])
        previous = np.concatenate([[-np.inf if since_flag is None else -since_flag - 1], flagged[:-1]])
        starts = flagged[flagged - previous > quiet]  # episodes' first rows
        last = None if since_alarm is None else -since_alarm - 1  # the last alarm's row, from the span's start
        at = 0 if last is None else int(np.searchsorted(starts, last + hold_off, side="right"))
        if hold_off == 0:
            chosen = starts[at:]
        else:
            picked: list[int] = []
            while at < len(starts):
                picked.append(int(starts[at]))
                at = int(np.searchsorted(starts, starts[at] + hold_off, side="right"))
            chosen = np.asarray(picked, dtype=np.int64)
        alarms[start + chosen] = True
        last = int(chosen[-1]) if len(chosen) else last
        last_flag = int(flagged[-1]) if len(flagged) else None if since_flag is None else -since_flag - 1
        rows = stop - start
        after.append((None if last is None else rows - 1 - last, None if last_flag is None else rows - 1 - last_flag))
    return alarms, after


Lookup = Callable[[dict[str, float]], dict[str, EntityState]]


class StreamStates:
    """The per-entity states batches continue from, by data time: a batch's entity continues
    the latest state that ends before its first row, whichever order batches are scored in
    (a batch scored late continues the state as of its own time; a state dated in the future
    stands before no real batch). `lookup` reads states kept elsewhere (the ledger's); the
    states this object records (its own earlier pieces and files) are searched too, and
    `latest` holds the newest state each entity reached here, for the caller to keep."""

    def __init__(self, lookup: Lookup | None = None) -> None:
        self.lookup = lookup
        self.history: dict[str, list[EntityState]] = {}
        self.continued: dict[str, EntityState] = {}  # the states this object's batches continued (alerts read them)

    def before(self, firsts: dict[str, float]) -> dict[str, EntityState]:
        """For each entity, the latest state ending before its first row's time (`firsts`)."""
        found = self.lookup(firsts) if self.lookup is not None and firsts else {}
        for entity, first in firsts.items():
            earlier = [state for state in self.history.get(entity, []) if state.end < first]
            if earlier:
                mine = max(earlier, key=lambda state: state.end)
                if entity not in found or mine.end > found[entity].end:
                    found[entity] = mine
        for entity, state in found.items():
            self.continued.setdefault(entity, state)
        return found

    def record(self, states: dict[str, EntityState]) -> None:
        for entity, state in states.items():
            self.history.setdefault(entity, []).append(state)

    @property
    def latest(self) -> dict[str, EntityState]:
        """Each entity's newest state reached here (the one that ends last)."""
        return {entity: max(states, key=lambda state: state.end) for entity, states in self.history.items()}


def time_seconds(times: pl.Series) -> np.ndarray:
    """A time column as float seconds: datetimes since the epoch, a numeric clock as it is."""
    if times.dtype.is_temporal():
        return times.dt.epoch("us").cast(pl.Float64).to_numpy() / 1e6
    return times.cast(pl.Float64).to_numpy()


def series_layout(
    keys: pl.DataFrame, schema: FeatureSchema, entities: tuple[list[Span], list[str]], stream: StreamStates | None
) -> SeriesLayout:
    """A sorted batch's spans and entities, with the state each entity continues (`stream`;
    None: every entity starts afresh). An entity whose batch begins more than the schema's
    `max_gap` after its state's last row restarts its span there, as the whole stream's
    windows do, and keeps counting rows since its last alarm and flag. `entities`: each entity's
    row bounds and its name (`entity_bounds`, `Scorer.entity_names`)."""
    spans, (bounds, entity_names) = series_bounds(keys, schema), entities
    assert schema.time_column is not None  # sensor models have one
    seconds = time_seconds(keys[schema.time_column])
    firsts = {name: float(seconds[start]) for name, (start, _) in zip(entity_names, bounds, strict=True)}
    found = stream.before(firsts) if stream is not None else {}
    gap = schema.max_gap.total_seconds() if schema.max_gap is not None else math.inf
    carried: list[EntityState | None] = []
    for name in entity_names:
        state = found.get(name)
        if state is not None and firsts[name] - state.end > gap:
            state = state.restarted()
        carried.append(state)
    starts = np.asarray([start for start, _ in bounds])
    span_entity = [int(np.searchsorted(starts, start, side="right")) - 1 for start, _ in spans]
    return SeriesLayout(spans, span_entity, entity_names, bounds, carried, [float(seconds[stop - 1]) for _, stop in bounds])
