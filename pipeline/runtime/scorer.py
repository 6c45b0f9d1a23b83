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
from pipeline.artifact.threshold import misplaced_threshold, percentile_of, threshold_at_quantile
from pipeline.core.errors import ModelArtifactError, PipelineError
from pipeline.data.inputs import model_inputs
from pipeline.data.schema import InputReport, RowNumbers, row_numbers, source_matrix
from pipeline.data.windows import entity_bounds
from pipeline.runtime.kernel import KernelPool
from pipeline.runtime.providers import Provider, check_graph, open_session, tensorrt_cache
from pipeline.runtime.steps import SeriesLayout, StepRule, StreamStates, continued_windows, series_layout

log = logging.getLogger(__name__)

Estimator = Literal["elbo", "mc", "iwae"]
Precision = Literal["fp32", "int8"]
Missing = Literal["error", "impute"]
WIDE_INTEGERS = tuple(getattr(pl, name) for name in ("Int128", "UInt128") if hasattr(pl, name))
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
        self._told: set[float] = set()  # hand-given thresholds already judged (misplaced_threshold)

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
        inputs = model_inputs(frame, self.schema, file=file, row_offset=row_offset, keep_infinite=True)
        frame, matrix, report = inputs.rows, inputs.x, inputs.report
        keys = frame.select(self.schema.key_columns)
        wide = [name for name, dtype in keys.schema.items() if dtype in WIDE_INTEGERS]
        if wide:  # ids past 64 bits (polars reads them as 128-bit): Parquet and Arrow hold them as text
            keys = keys.with_columns(pl.col(wide).cast(pl.String))
        if not keys.width:  # a table without keys: each row's number in its file (from 1, as errors count)
            keys = pl.DataFrame({contract.ROW: row_numbers(inputs.file_rows, frame.height) + 1})
        return matrix, keys, report

    def resolve(self, options: ScoreOptions) -> ScoreOptions:
        """Scoring options with the threshold settled: the one given, else the model's. Every
        scoring door goes through here, so the override is decided in one place."""
        if options.threshold is None:
            return replace(options, threshold=self.threshold)
        if options.threshold not in self._told:  # once per value: a flow resolves it for every batch
            self._told.add(options.threshold)
            note = misplaced_threshold(options.threshold, self._percentiles, self.threshold)
            if note:
                log.warning("%s", note)
        return options

    def threshold_at_quantile(self, quantile: float) -> float:
        """The threshold at `quantile` (0-1) of the model's calibration scores."""
        if self._percentiles is None:
            raise ModelArtifactError(
                f"model {self.manifest.key} keeps no calibration percentiles (exported by an older release): "
                "give --threshold as a score, or re-fit it with `vad threshold`."
            )
        return threshold_at_quantile(quantile, self._percentiles)

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
        stream: StreamStates | None = None,
    ) -> tuple[pl.DataFrame, InputReport]:
        """`score_with_report` on the output of `prepare` (which can run in another thread);
        with `drift`, the rows are counted into it too. With `stream`, each entity of a sensor
        batch continues the state its stream reached before the batch (`pipeline.runtime.steps`),
        and the state it reaches is recorded there: a stream scored batch by batch gives what
        it gives whole. Without, every entity starts afresh."""
        x, keys, report = prepared
        options = self.resolve(options)
        assert options.threshold is not None  # settled by resolve()
        rule = self.step_rule(options.threshold)
        layout = None
        if self.schema.mode == "sensor" and keys.height:
            bounds = entity_bounds(keys, self.schema)
            layout = series_layout(keys, self.schema, (bounds, self.entity_names(keys, bounds)), stream)
            x = self._continued(x, layout)
        k = min(options.top_k, len(self.source_names))
        arrays = self.score_array(
            x,
            options.estimator,
            options.samples,
            options.seed,
            top_k=k,
            with_kl=drift is not None and options.estimator == "elbo",
        )
        columns = self._steps(arrays.score, x, layout, rule, self._novel(report), stream)
        if layout is not None:  # the steps' scores (a table's rows keep the graph's float32)
            arrays = replace(arrays, score=columns[contract.SCORE].to_numpy())
        index, share = self._ranked(arrays, k)
        if drift is not None:
            self.count_drift(drift, x, keys, arrays)
        if self._percentiles is not None:
            columns[contract.PERCENTILE] = pl.Series(percentile_of(arrays.score, self._percentiles))
        for i in range(k):  # column names as categories: a gather of small codes, no Python strings
            columns[contract.top_feature(i + 1)] = self._names.gather(index[:, i])
            columns[contract.top_share(i + 1)] = pl.Series(share[:, i].astype(np.float32, copy=False))
        scored = keys.with_columns(**columns) if keys.width else pl.DataFrame(columns)  # no key columns
        return scored, report

    def _steps(
        self,
        scores: np.ndarray,
        x: np.ndarray,
        layout: SeriesLayout | None,
        rule: StepRule,
        novel: np.ndarray | None,
        stream: StreamStates | None,
    ) -> dict[str, pl.Series]:
        """The step columns: a sensor batch judged by the step rule as its streams' continuation
        (their states recorded in `stream`); a table's rows each their own step."""
        if layout is None:  # a table (or no rows)
            flags = scores > rule.threshold
            flags = flags | novel if novel is not None else flags
            columns = {contract.SCORE: pl.Series(scores.astype(np.float64)), contract.IS_ANOMALY: pl.Series(flags)}
            if rule.series:  # a sensor batch without rows still has every column
                return {**columns, contract.ALARM: pl.Series(flags), contract.JUDGED: pl.Series(flags)}
            return {**columns, contract.ALARM: pl.Series(flags)}
        steps = rule.judge(scores, x[:, -len(self.schema.row_features) :], layout, novel)
        if stream is not None:
            stream.record(steps.states)
        return {
            contract.SCORE: pl.Series(steps.score),
            contract.IS_ANOMALY: pl.Series(steps.is_anomaly),
            contract.ALARM: pl.Series(steps.alarm),
            contract.JUDGED: pl.Series(steps.judged),
        }

    def _ranked(self, arrays: ScoreArrays, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's top `k` source columns and their shares: the graph's own ranking, or ranked
        here (sampled estimators, older graphs)."""
        if arrays.top_index is not None and arrays.top_share is not None:
            return arrays.top_index, arrays.top_share
        assert arrays.feature_nll is not None
        shares = self.contributions(arrays.feature_nll)
        index = np.argsort(-shares, axis=1, kind="stable")[:, :k]
        return index, np.take_along_axis(shares, index, axis=1)

    def step_rule(self, threshold: float | None = None) -> StepRule:
        """The model's rule from window scores to steps, flags and alarms, at `threshold` (None:
        the model's own)."""
        manifest = self.manifest
        return StepRule(
            window=self.schema.window if self.schema.mode == "sensor" else None,
            threshold=manifest.threshold.value if threshold is None else threshold,
            normal=manifest.validation.normal_score,
            persistence=manifest.threshold.persistence,
            alarm=manifest.threshold.alarm,
            series=self.schema.mode == "sensor",
        )

    def _novel(self, report: InputReport) -> np.ndarray | None:
        """Rows to flag for a category never seen in training (`unseen = "flag"`)."""
        return report.novel_rows if self.schema.unseen == "flag" else None

    def _continued(self, x: np.ndarray, layout: SeriesLayout) -> np.ndarray:
        """The windows of each continued span's first rows rebuilt on the rows before the batch,
        in place of the padding `prepare` gave them (a copy: `x` is the caller's)."""
        length = self.schema.window.length if self.schema.window is not None else 1
        width = len(self.schema.row_features)
        copied = False
        for span, (start, stop) in enumerate(layout.spans):
            state = layout.continued(span)
            if length < 2 or state is None or not state.rows.size:
                continue
            if not copied:
                x, copied = x.copy(), True
            windows = continued_windows(state, x[start:stop, -width:], length)
            x[start : start + len(windows)] = windows
        return x

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


def _log_mean_exp(values: np.ndarray, axis: int) -> np.ndarray:
    """log(mean(exp(values))) along `axis`, shifted by the largest value so nothing overflows
    (scipy's logsumexp without the 0.11 s its import cost every `vad score` start)."""
    top = values.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)  # all −inf stays −inf, as in logsumexp
    with np.errstate(divide="ignore"):
        return np.squeeze(top, axis) + np.log(np.mean(np.exp(values - top), axis=axis))
