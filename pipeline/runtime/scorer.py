"""Scoring with onnxruntime alone: this module (and what it imports) never imports torch.

Scores are negative ELBO estimates, higher = more anomalous. Three estimators:
`elbo` (default, deterministic, z = mu), `mc` (Monte-Carlo ELBO with `samples` draws) and
`iwae` (importance-weighted bound, tighter, → −log p(x) as samples grow). The random
draws come from a numpy generator seeded by `seed`, so the same seed gives the same scores."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import polars as pl

from pipeline.artifact import contract
from pipeline.artifact.drift import SERIES, DriftCounter, column_blocks
from pipeline.artifact.manifest import Manifest, read_manifest, resolve_model_dir, verified_bytes
from pipeline.artifact.threshold import percentile_of
from pipeline.core.errors import PipelineError
from pipeline.data.schema import InputReport, RowNumbers, coerce, row_numbers, source_matrix, to_matrix
from pipeline.data.windows import (
    WindowIndex,
    entity_bounds,
    make_windows,
    mean_of_last_windows,
    series_bounds,
    sort_for_windows,
)
from pipeline.runtime.kernel import KernelPool
from pipeline.runtime.providers import Provider, check_graph, open_session, tensorrt_cache

log = logging.getLogger(__name__)

Estimator = Literal["elbo", "mc", "iwae"]
Precision = Literal["fp32", "int8"]
Missing = Literal["error", "impute"]
WIDE_INTEGERS = tuple(getattr(pl, name) for name in ("Int128", "UInt128") if hasattr(pl, name))
FILE_ROW = "__file_row"  # carried through the sort of sensor rows, so errors after it name file rows
ORT_BATCH = 4096  # rows per call for the other graphs: batches of 2k–8k rows stay in cache


@dataclass(frozen=True)
class ScoreOptions:
    """How to score, checked once: the estimator and its draws, the number of ranked source
    columns, and the alarm threshold (None: the model's own, as `Scorer.resolve` settles it)."""

    estimator: Estimator = "elbo"
    samples: int = 16
    seed: int = 0
    threshold: float | None = None
    top_k: int = contract.TOP_K

    def __post_init__(self) -> None:
        if self.estimator not in ("elbo", "mc", "iwae"):
            raise PipelineError(f"estimator must be one of elbo, mc, iwae, got {self.estimator!r}.")
        if self.samples < 1:
            raise PipelineError(f"samples must be ≥ 1, got {self.samples}.")
        if self.top_k < 0:
            raise PipelineError(f"top_k must be ≥ 0, got {self.top_k}.")
        if self.threshold is not None and not np.isfinite(self.threshold):
            raise PipelineError(f"the threshold must be a finite number, got {self.threshold}.")

    def seeded(self, offset: int) -> ScoreOptions:
        """The same options with the seed advanced by `offset` (rows already scored)."""
        return replace(self, seed=self.seed + offset)


@dataclass
class ScoreArrays:
    """Per-row scores with either per-input negative log-likelihood terms (raw units) or,
    from the scorer graph's own ranking, the top source columns' indices and shares."""

    score: np.ndarray
    feature_nll: np.ndarray | None = None
    top_index: np.ndarray | None = None
    top_share: np.ndarray | None = None
    kl: np.ndarray | None = None  # each row's KL from the prior (elbo, when asked for: drift)


class Scorer:
    """A loaded model version: `Scorer.load(path).score(frame) -> frame`."""

    def __init__(
        self,
        folder: Path,
        manifest: Manifest,
        provider: Provider = "auto",
        precision: Precision = "fp32",
        missing: Missing | None = None,
    ) -> None:
        if precision not in ("fp32", "int8"):
            raise PipelineError(f"precision must be fp32 or int8, got {precision!r}.")
        if precision == "int8" and contract.SCORER_INT8 not in manifest.graphs:
            raise PipelineError(
                f"model '{folder}' has no int8 scorer; train it with `[export] int8 = true` "
                "(or `vad train --int8`), or score with precision fp32."
            )
        self.folder, self.manifest, self.provider = folder, manifest, provider
        self.scorer_graph = contract.SCORER_INT8 if precision == "int8" else contract.SCORER
        if missing not in (None, "error", "impute"):
            raise PipelineError(f"missing must be error or impute, got {missing!r}.")
        # `impute` at scoring fills gaps with the training medians the manifest already holds,
        # so one empty reading need not fail a batch of a model trained with missing='error'.
        self.schema = (
            manifest.feature_schema if missing is None else manifest.feature_schema.model_copy(update={"missing": missing})
        )
        self._sessions: dict[str, ort.InferenceSession] = {}
        self.source_names, self._to_source = source_matrix(self.schema.input_sources)
        self._baseline = np.asarray(manifest.feature_baseline, dtype=np.float32)
        # Categorical, not an Enum of this model's names: scores files of several models (or
        # files) read together must share one type, and the writer encodes it as it is.
        self._names = pl.Series(self.source_names, dtype=pl.Categorical)
        self._kernel: KernelPool | None = None
        self._percentiles = manifest.validation.score_percentiles  # absent in older models

    @classmethod
    def load(
        cls, path: str | Path, provider: Provider = "auto", precision: Precision = "fp32", missing: Missing | None = None
    ) -> Scorer:
        """Load a version folder (or a model folder's `latest`), checking every sha256 first.
        There is no way to skip the checks: each graph is opened from checked bytes anyway.
        `precision="int8"` scores with the int8 scorer, when the model was exported with one;
        `missing` replaces the model's missing-value policy (None keeps it)."""
        folder = resolve_model_dir(path)
        scorer = cls(folder, read_manifest(folder), provider, precision, missing)
        scorer.kernel()  # fail at load, not at the first batch, if the graph is wrong
        return scorer

    @property
    def threshold(self) -> float:
        return self.manifest.threshold.value

    def session(self, graph: str) -> ort.InferenceSession:
        """The graph's session, from bytes checked against the manifest, refused unless the
        graph is the one the manifest describes (a swapped or foreign file)."""
        if graph not in self._sessions:
            file = f"{graph}.onnx"
            session = open_session(
                verified_bytes(self.folder, self.manifest, file),
                self.provider,
                str(self.folder / file),
                cache_dir=self._tensorrt_cache(),
            )
            check_graph(session, graph, self.manifest, self.folder / file)
            self._sessions[graph] = session
        return self._sessions[graph]

    def kernel(self) -> KernelPool:
        """The scorer graph's sessions (fp32 or int8), checked like `session`, opened once."""
        if self._kernel is None:
            file = self.folder / f"{self.scorer_graph}.onnx"
            kernel = KernelPool(
                verified_bytes(self.folder, self.manifest, file.name),
                self.provider,
                str(file),
                cache_dir=self._tensorrt_cache(),
            )
            for session in kernel.sessions:
                check_graph(session, self.scorer_graph, self.manifest, file)
            self._kernel = kernel
        return self._kernel

    def _tensorrt_cache(self) -> Path | None:
        return tensorrt_cache(self.folder) if self.provider == "tensorrt" else None

    # -- arrays -------------------------------------------------------------------------
    def score_array(
        self,
        x: np.ndarray,
        estimator: Estimator = "elbo",
        samples: int = ScoreOptions.samples,
        seed: int = 0,
        top_k: int | None = None,
        with_kl: bool = False,
    ) -> ScoreArrays:
        """Score raw model inputs (rows × inputs, float32). Higher = more anomalous.
        With `top_k` (elbo only), the graph's own ranking of the top source columns comes back
        instead of the per-input terms, when the graph ranks at least that many. `with_kl`
        (elbo only) also fetches each row's KL from the prior, in the same run."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.manifest.input_names):
            raise PipelineError(f"inputs must have shape (rows, {len(self.manifest.input_names)}), got {x.shape}.")
        if estimator == "elbo":
            kl = ["kl"] if with_kl else []
            if top_k is not None and top_k <= self.kernel().top_k:
                score, index, share, *rest = self.kernel().run([contract.SCORE, "top_index", "top_share", *kl], x)
                return ScoreArrays(
                    score, top_index=index[:, :top_k], top_share=share[:, :top_k], kl=rest[0] if rest else None
                )
            score, nll, *rest = self.kernel().run([contract.SCORE, "feature_nll", *kl], x)
            return ScoreArrays(score, nll, kl=rest[0] if rest else None)
        ScoreOptions(estimator=estimator, samples=samples)  # refuses an unknown estimator, samples < 1
        if len(x) == 0:
            return ScoreArrays(np.zeros(0, np.float32), np.zeros((0, x.shape[1]), np.float32))
        rng = np.random.default_rng(seed)
        latent = int(self.manifest.model["latent"])
        session = self.session(contract.SCORER_SAMPLED)
        batch = max(1, ORT_BATCH // samples)
        scores, nlls = [], []
        for i in range(0, len(x), batch):
            chunk = x[i : i + batch]
            eps = rng.standard_normal((len(chunk), samples, latent), dtype=np.float32)
            log_weight, nll = session.run(None, {"x": chunk, "eps": eps})
            # log_weight: [rows, samples, members]; each member's bound, then the member mean.
            if estimator == "mc":
                bound = log_weight.mean(axis=1, dtype=np.float64)
            else:  # log-mean-exp of the importance weights
                bound = _log_mean_exp(log_weight.astype(np.float64), axis=1)
            scores.append(-bound.mean(axis=1))
            nlls.append(nll)
        return ScoreArrays(np.concatenate(scores).astype(np.float32), np.concatenate(nlls))

    def contributions(self, feature_nll: np.ndarray) -> np.ndarray:
        """Each source column's share of the excess NLL over its validation mean (rows sum to 1,
        or 0 where no feature is above its normal level)."""
        excess = np.maximum(feature_nll - self._baseline, 0.0) @ self._to_source
        total = excess.sum(axis=1, keepdims=True)
        return np.divide(excess, total, out=np.zeros_like(excess), where=total > 0)

    # -- frames -------------------------------------------------------------------------
    def prepare(
        self, frame: pl.DataFrame, file: str | None = None, row_offset: RowNumbers = 0
    ) -> tuple[np.ndarray, pl.DataFrame, InputReport]:
        """Validate and encode a frame: model inputs, the key columns per scored row, repairs.
        `row_offset` places the rows in their file, for errors (see `RowNumbers`)."""
        frame = coerce(frame, self.schema, file, row_offset)
        resorted, arrived = False, frame.height
        if self.schema.mode == "sensor":
            numbered = frame.with_columns(pl.Series(FILE_ROW, row_numbers(row_offset, frame.height)))
            frame, resorted = sort_for_windows(numbered, self.schema, file, row_offset)
            row_offset = frame[FILE_ROW].to_numpy()  # sorted (and merged) with the rows: errors below name them
            frame = frame.drop(FILE_ROW)
        matrix, report = to_matrix(frame, self.schema, file, row_offset, keep_infinite=True)
        report.resorted, report.merged = resorted, arrived - frame.height
        if self.schema.mode == "sensor" and self.schema.window and self.schema.window.length > 1:
            if frame.height:
                matrix, _ = make_windows(matrix, series_bounds(frame, self.schema), self.schema.window, pad=True)
            else:  # no series, no windows: an empty batch scores to an empty frame
                matrix = np.zeros((0, len(self.manifest.input_names)), np.float32)
        keys = frame.select(self.schema.key_columns)
        wide = [name for name, dtype in keys.schema.items() if dtype in WIDE_INTEGERS]
        if wide:  # ids past 64 bits (polars reads them as 128-bit): Parquet and Arrow hold them as text
            keys = keys.with_columns(pl.col(wide).cast(pl.String))
        if not keys.width:  # a table without keys: each row's number in its file (from 1, as errors count)
            keys = pl.DataFrame({contract.ROW: row_numbers(row_offset, frame.height) + 1})
        return matrix, keys, report

    def resolve(self, options: ScoreOptions) -> ScoreOptions:
        """Scoring options with the threshold settled: the one given, else the model's. Every
        scoring door goes through here, so the override is decided in one place."""
        return options if options.threshold is not None else replace(options, threshold=self.threshold)

    def score_with_report(
        self, frame: pl.DataFrame, *, file: str | None = None, row_offset: RowNumbers = 0, **options: Any
    ) -> tuple[pl.DataFrame, InputReport]:
        """Score every row (every time step in sensor mode) and explain it; `options` are
        ScoreOptions' fields (estimator, samples, seed, threshold, top_k)."""
        return self.score_prepared(self.prepare(frame, file, row_offset), self.resolve(ScoreOptions(**options)))

    def score_prepared(
        self,
        prepared: tuple[np.ndarray, pl.DataFrame, InputReport],
        options: ScoreOptions,
        drift: DriftCounter | None = None,
        alarm_state: dict[str, Held] | None = None,
    ) -> tuple[pl.DataFrame, InputReport]:
        """`score_with_report` on the output of `prepare` (which can run in another thread);
        with `drift`, the rows are counted into it too; `alarm_state` carries each entity's
        alarm state from an earlier batch, and is brought up to date (`alarms`)."""
        x, keys, report = prepared
        options = self.resolve(options)
        k = min(options.top_k, len(self.source_names))
        arrays = self.score_array(
            x,
            options.estimator,
            options.samples,
            options.seed,
            top_k=k,
            with_kl=drift is not None and options.estimator == "elbo",
        )
        arrays = replace(arrays, score=self.series_scores(arrays.score, keys))
        if arrays.top_index is None or arrays.top_share is None:  # rank here: sampled estimators, older graphs
            assert arrays.feature_nll is not None
            shares = self.contributions(arrays.feature_nll)
            index = np.argsort(-shares, axis=1, kind="stable")[:, :k]
            share = np.take_along_axis(shares, index, axis=1)
        else:
            index, share = arrays.top_index, arrays.top_share
        assert options.threshold is not None  # settled by resolve()
        if drift is not None:
            self.count_drift(drift, x, keys, arrays)
        flags = self.flags(arrays.score, options.threshold, keys, report.novel_rows)
        columns: dict[str, pl.Series] = {
            contract.SCORE: pl.Series(arrays.score.astype(np.float64)),
            contract.IS_ANOMALY: pl.Series(flags),
            contract.ALARM: pl.Series(self.alarms(flags, keys, alarm_state)),
        }
        if self._percentiles is not None:
            columns[contract.PERCENTILE] = pl.Series(percentile_of(arrays.score, self._percentiles))
        for i in range(k):  # column names as categories: a gather of small codes, no Python strings
            columns[contract.top_feature(i + 1)] = self._names.gather(index[:, i])
            columns[contract.top_share(i + 1)] = pl.Series(share[:, i].astype(np.float32, copy=False))
        scored = keys.with_columns(**columns) if keys.width else pl.DataFrame(columns)  # no key columns
        return scored, report

    def drift_counter(self) -> DriftCounter | None:
        """A counter for one batch's drift against the model's reference (None: a model
        exported before models carried one)."""
        reference = self.manifest.drift
        return DriftCounter(reference, column_blocks(self.schema)) if reference is not None else None

    def count_drift(self, drift: DriftCounter, x: np.ndarray, keys: pl.DataFrame, arrays: ScoreArrays) -> None:
        """Count scored rows into `drift`: each row's own readings (a window's last step), its
        KL and score, and in sensor mode each entity's span."""
        kl = arrays.kl if arrays.kl is not None else self.kernel().run(["kl"], np.ascontiguousarray(x))[0]
        spans = None
        if self.schema.mode == "sensor" and keys.height:
            bounds = entity_bounds(keys, self.schema)
            spans = [
                (name, start, stop) for name, (start, stop) in zip(self.entity_names(keys, bounds), bounds, strict=True)
            ]
        drift.add(x[:, -len(self.schema.row_features) :], kl, arrays.score, spans)

    def series_scores(self, scores: np.ndarray, keys: pl.DataFrame) -> np.ndarray:
        """The windows' scores as each step's score, by the model's window rule (WindowSpec):
        under `mean`, each step takes the mean of its last `length` windows in its series."""
        window = self.schema.window
        if self.schema.mode != "sensor" or window is None or not window.averaged:
            return scores
        index = WindowIndex(np.arange(keys.height), series_bounds(keys, self.schema))
        return mean_of_last_windows(scores, index, window.length)

    def flags(
        self, scores: np.ndarray, limit: float, keys: pl.DataFrame, novel_rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Rows above `limit`; with the model's persistence rule (k of the last n rows of each
        entity's series, in time order), only those whose run of exceedances is long enough.
        A series' first `length - 1` rows are scored on windows padded with its first row, a
        history that never happened, and are not flagged (on NAB's iio_us-east-1 they were
        two thirds of the training rows flagged). Under `unseen = "flag"`, rows with a
        category never seen in training are flagged all the same."""
        rule = self.manifest.threshold.persistence
        if rule.k <= 1:
            flagged = scores > limit
        else:
            flagged = persistent(scores > limit, series_bounds(keys, self.schema), rule.k, rule.n)
        window = self.schema.window
        if self.schema.mode == "sensor" and window is not None and window.length > 1:
            for start, stop in series_bounds(keys, self.schema):  # windows padded with the span's first row
                flagged[start : min(stop, start + window.length - 1)] = False
        if novel_rows is not None and self.schema.unseen == "flag":
            flagged |= novel_rows
        return flagged

    def alarms(self, flags: np.ndarray, keys: pl.DataFrame, state: dict[str, Held] | None = None) -> np.ndarray:
        """The onsets of anomalous episodes among flagged rows: in sensor mode, per entity, as
        the model's AlarmRule says (`onsets`). `state` maps an entity to the times of its last
        alarm and its last flagged row and its time step, from earlier batches (a scheduled flow
        keeps it in the ledger); it is brought up to date in place. Times, not row counts, carry
        it: batches scored out of order or by two runs at once still count the rows between."""
        if self.schema.mode != "sensor" or not keys.height:
            return flags
        bounds = entity_bounds(keys, self.schema)
        names = self.entity_names(keys, bounds)
        rule = self.manifest.threshold.alarm
        if state is None:
            return onsets(flags, bounds, rule.hold_off, rule.quiet)[0]
        assert self.schema.time_column is not None  # sensor models have one
        seconds = time_seconds(keys[self.schema.time_column])
        held = [state.get(name, (None, None, None)) for name in names]
        steps = [
            float(np.median(np.diff(seconds[start:stop]))) if stop - start > 1 else step
            for (start, stop), (_, _, step) in zip(bounds, held, strict=True)
        ]
        since: list[Hold] = [
            (rows_between(alarm_at, float(seconds[start]), step), rows_between(flag_at, float(seconds[start]), step))
            for (start, _), (alarm_at, flag_at, _), step in zip(bounds, held, steps, strict=True)
        ]
        alarms = onsets(flags, bounds, rule.hold_off, rule.quiet, since)[0]
        for name, (start, stop), (alarm_at, flag_at, _), step in zip(names, bounds, held, steps, strict=True):
            alarmed, flagged = np.flatnonzero(alarms[start:stop]), np.flatnonzero(flags[start:stop])
            state[name] = (
                float(seconds[start + alarmed[-1]]) if len(alarmed) else alarm_at,
                float(seconds[start + flagged[-1]]) if len(flagged) else flag_at,
                step,
            )
        return alarms

    def entity_names(self, keys: pl.DataFrame, bounds: list[tuple[int, int]]) -> list[str]:
        """Each span's entity, as text (SERIES for a model without an entity column; "" for
        rows without an entity)."""
        entity = self.schema.entity_column
        if not entity or not bounds:
            return [SERIES] * len(bounds)
        return keys[entity].gather([start for start, _ in bounds]).cast(pl.String).fill_null("").to_list()

    def score(self, frame: pl.DataFrame, **options: Any) -> pl.DataFrame:
        """Score a frame; repairs (imputed values, unseen categories) are logged as warnings."""
        scored, report = self.score_with_report(frame, **options)
        if report.repaired:
            log.warning("input repairs: %s", report.summary())
        return scored

    def encode(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Latent means per row and ensemble member (`m0_z0` … `m{M-1}_z{k}`; members' latent
        spaces are unrelated), with the row keys."""
        x, keys, _ = self.prepare(frame)
        mu = self.kernel().run(["mu"], np.ascontiguousarray(x, dtype=np.float32))[0]
        rows, members, latent = mu.shape
        names = [f"m{m}_z{i}" for m in range(members) for i in range(latent)]
        return keys.with_columns(pl.DataFrame(mu.reshape(rows, members * latent), schema=names))

    def sample(self, n: int, seed: int = 0) -> pl.DataFrame:
        """Synthetic normal rows: decoder means at z ~ N(0, I) of a member drawn per row (the
        ensemble as a mixture), in raw units (one column per model input; in tabular mode
        one-hot groups collapse back to their most likely category)."""
        if n < 1:
            raise PipelineError(f"the number of rows to sample must be at least 1, got {n}.")
        rng = np.random.default_rng(seed)
        members, latent = int(self.manifest.model.get("members", 1)), int(self.manifest.model["latent"])
        z = rng.standard_normal((n, members, latent), dtype=np.float32)
        member = rng.integers(members, size=n)
        mean = self.session(contract.DECODER).run(["mean"], {"z": z})[0][np.arange(n), member]
        raw = self.manifest.scaler.build().inverse(mean)
        frame = pl.DataFrame(raw, schema=self.manifest.input_names)
        if self.schema.mode != "tabular":
            return frame
        out = {}
        for col in self.schema.columns:
            if col.kind == "numeric":
                out[col.name] = frame[col.name]
            else:
                block = frame.select([f"{col.name}={c}" for c in col.categories]).to_numpy()
                out[col.name] = pl.Series(np.asarray(col.categories)[block.argmax(axis=1)])
        return pl.DataFrame(out)


def persistent(exceeds: np.ndarray, bounds: list[tuple[int, int]], k: int, n: int) -> np.ndarray:
    """True where at least `k` of the last `n` rows of the same span (itself included) exceed;
    a series' first rows count only the rows it has."""
    flags = np.zeros_like(exceeds)
    for start, stop in bounds:
        counts = np.concatenate([[0], np.cumsum(exceeds[start:stop], dtype=np.int64)])
        ends = np.arange(1, stop - start + 1)
        flags[start:stop] = counts[ends] - counts[np.maximum(ends - n, 0)] >= k
    return flags


Hold = tuple[int | None, int | None]  # an entity's rows since its last alarm and since its last flagged row
# An entity's last alarm and last flagged row, in its time column's seconds, and its time step in seconds.
Held = tuple[float | None, float | None, float | None]


def time_seconds(times: pl.Series) -> np.ndarray:
    """A time column as float seconds: datetimes since the epoch, a numeric clock as it is."""
    if times.dtype.is_temporal():
        return times.dt.epoch("us").cast(pl.Float64).to_numpy() / 1e6
    return times.cast(pl.Float64).to_numpy()


def rows_between(then: float | None, first: float, step: float | None) -> int | None:
    """Rows between a moment of an earlier batch and this batch's first row, at the entity's
    time step (None: nothing earlier, or a moment that is not earlier: batches out of order).
    Without a step (one-row batches only), none."""
    if then is None or not then < first:
        return None
    return max(0, round((first - then) / step) - 1) if step and step > 0 else 0


def onsets(
    flags: np.ndarray, bounds: list[tuple[int, int]], hold_off: int, quiet: int = 0, since: list[Hold] | None = None
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


def _log_mean_exp(values: np.ndarray, axis: int) -> np.ndarray:
    """log(mean(exp(values))) along `axis`, shifted by the largest value so nothing overflows
    (scipy's logsumexp without the 0.11 s its import cost every `vad score` start)."""
    top = values.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)  # all −inf stays −inf, as in logsumexp
    with np.errstate(divide="ignore"):
        return np.squeeze(top, axis) + np.log(np.mean(np.exp(values - top), axis=axis))
