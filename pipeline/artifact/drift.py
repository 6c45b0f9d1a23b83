"""Drift against the training data: the reference a model carries (the manifest's `drift`),
and a batch's drift against it, counted chunk by chunk.

- Every source column: the population stability index (PSI) of the batch's readings over ten
  bins cut at the training deciles (a categorical column: its categories, and one bin for
  categories never seen in training). PSI = Σ (p − q)·ln(p / q) over the bins; by its usual
  reading, below 0.1 nothing moved, 0.1 to 0.25 is a moderate shift, above 0.25 a major one.
  In a fleet, the expected shares are the batch's own mix of entities (each entity's training
  shares, weighted by its rows in the batch): a batch of one machine is not drift.
- Per entity of a sensor fleet (a series without an entity column: one entity, SERIES),
  against that entity's own training rows (machines differ from the fleet, and that is not
  drift): how far each numeric column's median moved, in units of how much the median of as
  many consecutive readings varied in training (the spread of training block medians, blocks
  of BLOCKS readings; the batch's median is read from counts over the entity's training
  percentiles). In sensor mode this decides, not the PSI: readings a minute apart are not
  independent draws, and two clean days of one demo machine gave PSIs of 0.29 to 0.54 against
  its own ten training days (daily cycles, a wandering load). The unit matters as much: the
  medians of 24 of 36 clean ten-hour demo batches lay more than one training SD from their
  machine's training median (a daily cycle's day or night half), which the spread of ten-hour
  medians expects; in that unit none of 50 such batches passed 3. And the
  median, not the mean: a sensor stuck high for a fifth of a batch (a fault, the anomaly
  alert's business) moves a mean far and a median little.
- The latent code: the PSI of each row's KL divergence from the prior (the scorer graph's
  `kl`), which grows as the encoder meets inputs unlike its training data.
- The score: its PSI against the validation scores.
The latent and score views are reported; alerts name the columns (`DriftRules`)."""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np
from pydantic import BaseModel, Field

from pipeline.core.config import DriftRules
from pipeline.data.schema import FeatureSchema

DECILES = np.linspace(0.1, 0.9, 9)
FLOOR = 1e-4  # a bin's share is at least this, so an empty bin does not make the PSI infinite
MAX_ENTITIES = 1000  # entities given their own reference (more would swell the manifest)
MIN_ENTITY_ROWS = 100  # an entity's own shift is judged from this many rows up
UNSEEN = "not in the training data"  # why an entity has no judgement of its own (DriftReport.not_judged)
PERCENTILES = np.linspace(0.01, 0.99, 50)  # an entity's own bins, fine enough to read a median from
BLOCKS = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # readings per block, for the spread of medians
SPREAD_FLOOR = 0.1  # of the training SD: a smooth, repeating column still needs a visible move
SERIES = "*"  # the one entity of a sensor model without an entity column
# Rows of a chunk counted (every k-th): histograms and medians need no more. Counting every
# row of 65,536 × 32 cost 54 ms a chunk against the scorer's 115 (bench/time_to_model.py: +39%).
SAMPLE_ROWS = 8192


class Histogram(BaseModel):
    """Reference shares of a value's bins: cut at `edges` (bin i holds edges[i-1] < v ≤ edges[i]),
    or, for a categorical column, one bin per category and a last one for unseen categories."""

    edges: list[float] = []
    categories: list[str] | None = None
    fractions: list[float] = Field(min_length=1)

    @classmethod
    def of_values(cls, values: np.ndarray) -> Histogram:
        finite = values[np.isfinite(values)]
        edges = np.unique(np.quantile(finite, DECILES)) if len(finite) else np.zeros(0)
        histogram = cls(edges=edges.tolist(), fractions=[1.0] * (len(edges) + 1))
        counts = histogram.counts(finite)
        return histogram.model_copy(update={"fractions": (counts / max(counts.sum(), 1)).tolist()})

    @classmethod
    def of_categories(cls, one_hot: np.ndarray, categories: list[str]) -> Histogram:
        histogram = cls(categories=categories, fractions=[1.0] * (len(categories) + 1))
        counts = histogram.counts(one_hot)
        return histogram.model_copy(update={"fractions": (counts / max(counts.sum(), 1)).tolist()})

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Rows per bin: `values` are readings (missing ones are not counted), or for a
        categorical column its one-hot block (a row of zeros: an unseen category)."""
        if self.categories is not None:
            index = np.where(values.any(axis=1), values.argmax(axis=1), len(self.categories))
            return np.bincount(index, minlength=len(self.fractions))
        finite = values if np.isfinite(values).all() else values[np.isfinite(values)]
        # Rows at or below each edge, one comparison each: on a contiguous float64 column, 1.6×
        # faster than a searchsorted over the few edges.
        at_or_below = [np.count_nonzero(finite <= edge) for edge in np.asarray(self.edges, np.float64)]
        return np.diff(np.asarray(at_or_below, np.int64), prepend=0, append=len(finite))

    def psi(self, counts: np.ndarray, expected: np.ndarray | None = None) -> float:
        """The PSI of a batch's bin counts against this reference's shares, or `expected`
        (0 for no rows)."""
        total = counts.sum()
        if total == 0:
            return 0.0
        actual = np.maximum(counts / total, FLOOR)
        shares = np.maximum(np.asarray(self.fractions) if expected is None else expected, FLOOR)
        return float(np.sum((actual - shares) * np.log(actual / shares)))


class EntityReference(BaseModel):
    """One entity's training rows: each column's bin shares (the fleet's bins), and each
    numeric column's percentiles (PERCENTILES), median and standard deviation, and the
    spread (SD) of the medians of its consecutive blocks of BLOCKS readings (None where
    training held fewer than four such blocks)."""

    fractions: dict[str, list[float]]
    percentiles: dict[str, list[float]]
    levels: dict[str, tuple[float, float]]  # (median, standard deviation)
    spread: dict[str, list[float | None]]

    def shift(self, name: str, counts: np.ndarray, readings: float) -> float:
        """How far a batch's median moved from training, in units of the spread of training
        medians over as many readings (the largest block no more than `readings`; the SD
        where there is none, never below SPREAD_FLOOR SDs), read from its counts over this
        entity's percentile bins (a median past the outer percentiles is taken at them: the
        shift is at least that)."""
        edges = np.asarray(self.percentiles[name])
        median, sd = self.levels[name]
        fits = [s for block, s in zip(BLOCKS, self.spread[name], strict=True) if block <= readings and s is not None]
        unit = max(fits[-1] if fits else sd, SPREAD_FLOOR * sd)
        cumulative = np.cumsum(counts)
        half = cumulative[-1] / 2
        b = int(np.searchsorted(cumulative, half))  # the bin holding the batch's median
        # A column of a few levels (a quantised gauge) ties its percentiles; its readings in a
        # bin sit at the bin's upper edge, and spreading them over the bin moved SKAB's
        # 8-level Pressure by 4-5 spreads with its median unchanged (bench/drift_check.py).
        discrete = len(np.unique(edges)) < len(edges) // 2
        if b == 0 or b == len(edges) or discrete:
            level = edges[min(b, len(edges) - 1)]
        else:
            below = cumulative[b - 1]
            level = edges[b - 1] + (edges[b] - edges[b - 1]) * (half - below) / max(counts[b], 1)
        return float((level - median) / unit) if unit > 0 else 0.0


class DriftReference(BaseModel):
    """The training data's histograms, kept in the manifest: per source column, the latent
    KL and the validation score; per entity of a sensor fleet (up to MAX_ENTITIES), its own
    shares and levels (EntityReference)."""

    features: dict[str, Histogram]
    latent: Histogram
    score: Histogram
    entities: dict[str, EntityReference] = {}

    def expected(self, name: str, rows: dict[str, float]) -> np.ndarray:
        """A column's expected bin shares for a batch with `rows` rows per entity: the
        entities' own shares mixed by those rows (entities not in training: the fleet's)."""
        fleet = np.asarray(self.features[name].fractions)
        total = sum(rows.values())
        if not self.entities or total == 0:
            return fleet
        mix = np.zeros_like(fleet)
        for entity, n in rows.items():
            own = self.entities.get(entity)
            mix += n * (np.asarray(own.fractions[name]) if own is not None else fleet)
        return mix / total


class DriftReport(BaseModel):
    """A batch's drift from the model's reference, and what passed the rules' limits."""

    rows: int
    rules: DriftRules
    features: dict[str, float]  # PSI per source column
    latent: float  # PSI of the rows' KL from the prior
    score: float  # PSI of the scores against the validation scores
    # Columns that drifted, the largest first: tables, by PSI past `rules.psi`; sensors, by a
    # median shifted past `rules.shift` in at least one entity.
    drifting: list[str]
    entities: dict[str, dict[str, float]] = {}  # per entity: its columns whose median moved past `rules.shift`
    not_judged: dict[str, str] = {}  # entities with no judgement of their own, and why (unknown, too few rows)

    @property
    def drifted(self) -> bool:
        return bool(self.drifting or self.entities)


Blocks = list[tuple[str, slice, list[str] | None]]


def column_blocks(schema: FeatureSchema) -> Blocks:
    """Each source column's inputs among one row's features (`schema.row_features`): (name,
    its slice, its categories or None for a number)."""
    blocks, at = [], 0
    for col in schema.columns:
        width = len(col.categories) if col.kind == "categorical" else 1
        blocks.append((col.name, slice(at, at + width), col.categories if col.kind == "categorical" else None))
        at += width
    return blocks


def reference_of(
    rows: np.ndarray, blocks: Blocks, kl: np.ndarray, scores: np.ndarray, entities: np.ndarray | None = None, stride: int = 1
) -> DriftReference:
    """The reference from training rows (raw, one per time step: rows × row features), cut
    into source columns by `blocks` (name, its inputs, its categories or None), the validation
    rows' KL and scores, and (`entities`: each row's entity, rows in time order, one every
    `stride` readings) every entity's own levels."""
    features = {
        name: (
            Histogram.of_categories(rows[:, cut], categories)
            if categories is not None
            else Histogram.of_values(rows[:, cut.start].astype(np.float64))
        )
        for name, cut, categories in blocks
    }
    own: dict[str, EntityReference] = {}
    names: np.ndarray = np.unique(entities) if entities is not None else np.zeros(0)
    for entity in names if len(names) <= MAX_ENTITIES else []:
        mine = rows[entities == entity]
        shares = {}
        for name, cut, categories in blocks:
            counts = features[name].counts(mine[:, cut] if categories is not None else mine[:, cut.start])
            shares[name] = [round(v, 6) for v in (counts / max(counts.sum(), 1)).tolist()]
        numbers = {name: mine[:, cut.start].astype(np.float64) for name, cut, categories in blocks if categories is None}
        numbers = {name: values[np.isfinite(values)] for name, values in numbers.items()}
        own[str(entity)] = EntityReference(
            fractions=shares,
            percentiles={n: np.quantile(v, PERCENTILES).round(6).tolist() if len(v) else [0.0] for n, v in numbers.items()},
            levels={n: (float(np.median(v)), float(np.std(v))) if len(v) else (0.0, 0.0) for n, v in numbers.items()},
            spread={n: block_spread(v, stride) for n, v in numbers.items()},
        )
    return DriftReference(
        features=features,
        latent=Histogram.of_values(kl.astype(np.float64)),
        score=Histogram.of_values(scores.astype(np.float64)),
        entities=own,
    )


def block_spread(values: np.ndarray, stride: int) -> list[float | None]:
    """For each block length in BLOCKS (readings; a row is `stride` readings), the SD of the
    medians of consecutive blocks of the series, or None with fewer than four blocks."""
    spread: list[float | None] = []
    for block in BLOCKS:
        size = max(1, block // stride)
        count = len(values) // size
        medians = np.median(values[: count * size].reshape(count, size), axis=1) if count >= 4 else None
        spread.append(round(float(np.std(medians, ddof=1)), 6) if medians is not None else None)
    return spread


class DriftCounter:
    """A batch's bin counts, per column and per entity, added chunk by chunk (memory: counts,
    never rows)."""

    def __init__(self, reference: DriftReference, blocks: Blocks) -> None:
        self.reference, self.blocks, self.rows = reference, blocks, 0
        self.features = {name: np.zeros(len(reference.features[name].fractions), np.int64) for name, _, _ in blocks}
        self.numeric = [(name, cut.start) for name, cut, categories in blocks if categories is None]
        self.bins: dict[str, np.ndarray] = {}  # entity → [numeric column, its percentile bin] counts
        self.entity_rows: dict[str, float] = defaultdict(float)
        self.latent = np.zeros(len(reference.latent.fractions), np.int64)
        self.score = np.zeros(len(reference.score.fractions), np.int64)
        self._lock = threading.Lock()  # chunks of a table are counted from two threads at once

    def add(
        self, rows: np.ndarray, kl: np.ndarray, scores: np.ndarray, entities: list[tuple[str, int, int]] | None = None
    ) -> None:
        """Count a chunk: its rows (raw, rows × row features), their KL and scores, and in
        sensor mode each entity's span of rows (name, start, stop); every k-th row only, at
        most SAMPLE_ROWS of them (an entity's readings are all counted, for its block size)."""
        with self._lock:
            self.rows += len(rows)
            for entity, start, stop in entities or []:
                self.entity_rows[entity] += stop - start
            step = -(-len(rows) // SAMPLE_ROWS)  # ceiling division
            if step > 1:
                rows, kl, scores = rows[::step], kl[::step], scores[::step]
                entities = [(entity, -(-start // step), -(-stop // step)) for entity, start, stop in entities or []]
            # The numeric columns once, contiguous and float64 (column-major): counting strided
            # float32 columns against float64 edges took 4× as long (bench/NOTES.md, session 7).
            columns = np.ascontiguousarray(rows[:, [at for _, at in self.numeric]].T, dtype=np.float64)
            numeric = iter(columns)
            for name, cut, categories in self.blocks:
                values = rows[:, cut] if categories is not None else next(numeric)
                self.features[name] += self.reference.features[name].counts(values)
            if self.reference.entities and self.numeric:
                for entity, start, stop in entities or []:
                    own = self.reference.entities.get(entity)
                    if own is None:  # an entity the model never saw: nothing of its own to compare with
                        continue
                    held = self.bins.setdefault(entity, np.zeros((len(self.numeric), len(PERCENTILES) + 1), np.int64))
                    for i, (name, _) in enumerate(self.numeric):
                        values = columns[i, start:stop]
                        held[i] += np.bincount(
                            np.searchsorted(own.percentiles[name], values[np.isfinite(values)]), minlength=held.shape[1]
                        )
            self.latent += self.reference.latent.counts(kl.astype(np.float64))
            self.score += self.reference.score.counts(scores.astype(np.float64))

    def report(self, rules: DriftRules) -> DriftReport:
        reference = self.reference
        psi: dict[str, float] = {
            name: reference.features[name].psi(counts, reference.expected(name, self.entity_rows))
            for name, counts in self.features.items()
        }
        not_judged = self._not_judged()
        entities = self._shifted_entities(rules)
        if reference.entities:  # sensors: the levels decide
            largest = {
                c: max(abs(s[c]) for s in entities.values() if c in s) for c in {c for s in entities.values() for c in s}
            }
            # N08: machines the model never saw have no level of their own: when they hold most of the
            # batch, the fleet's PSI decides. Short series (N09) are only named: a PSI on a few rows
            # per machine (a slice of the day) reads as drift on clean data.
            unknown = sum(self.entity_rows[e] for e, why in not_judged.items() if why == UNSEEN)
            if unknown and unknown >= 0.5 * sum(self.entity_rows.values()):
                largest |= {n: v for n, v in psi.items() if v > rules.psi and n not in largest}
        else:
            largest = {n: v for n, v in psi.items() if v > rules.psi}
        return DriftReport(
            rows=self.rows,
            rules=rules,
            features={n: round(v, 4) for n, v in psi.items()},
            latent=round(self.reference.latent.psi(self.latent), 4),
            score=round(self.reference.score.psi(self.score), 4),
            drifting=sorted(largest, key=lambda n: (-largest[n], n)),
            entities=entities,
            not_judged=not_judged,
        )

    def _not_judged(self) -> dict[str, str]:
        """Entities of a fleet with no judgement of their own, and why: unseen, or too few rows."""
        reference, why = self.reference, {}
        for entity, readings in sorted(self.entity_rows.items()):
            if reference.entities and entity not in reference.entities:
                why[entity] = UNSEEN
            elif reference.entities and readings < MIN_ENTITY_ROWS:
                why[entity] = f"{readings:.0f} rows, fewer than {MIN_ENTITY_ROWS}"
        return why

    def _shifted_entities(self, rules: DriftRules) -> dict[str, dict[str, float]]:
        """Per known entity with enough rows, its columns whose median moved past `rules.shift`
        (in spreads of training medians), the largest first."""
        entities = {}
        for entity, held in sorted(self.bins.items()):
            own, readings = self.reference.entities[entity], self.entity_rows[entity]
            if readings < MIN_ENTITY_ROWS:
                continue
            shifts = {}
            for (name, _), counts in zip(self.numeric, held, strict=True):
                if counts.sum() and abs(moved := own.shift(name, counts, readings)) > rules.shift:
                    shifts[name] = round(moved, 3)
            if shifts:
                entities[entity] = dict(sorted(shifts.items(), key=lambda item: -abs(item[1])))
        return entities
