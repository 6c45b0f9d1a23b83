"""Drift against the training data: the reference a model carries (the manifest's `drift`),
and a batch's drift against it, counted chunk by chunk.

- Every source column: the population stability index (PSI) of the batch's readings over ten
  bins cut at the training deciles (a categorical column: its categories, and one bin for
  categories never seen in training). PSI = Σ (p − q)·ln(p / q) over the bins; by its usual
  reading, below 0.1 nothing moved, 0.1 to 0.25 is a moderate shift, above 0.25 a major one.
- Per entity of a sensor fleet, against that entity's own training rows (machines differ from
  the fleet, and that is not drift): how far each numeric column's mean moved, in that
  entity's training standard deviations. A PSI per entity was tried first: over three days of
  one machine's cyclic readings it passed 0.25 on normal data (the demo's clean rows).
- The latent code: the PSI of each row's KL divergence from the prior (the scorer graph's
  `kl`), which grows as the encoder meets inputs unlike its training data.
- The score: its PSI against the validation scores.
The latent and score views are reported; alerts name the columns (`DriftRules`)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pydantic import BaseModel, Field

from pipeline.core.config import DriftRules
from pipeline.data.schema import FeatureSchema

DECILES = np.linspace(0.1, 0.9, 9)
FLOOR = 1e-4  # a bin's share is at least this, so an empty bin does not make the PSI infinite
MAX_ENTITIES = 1000  # entities given their own reference (more would swell the manifest)
MIN_ENTITY_ROWS = 100  # an entity's own shift is judged from this many rows up


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
        finite = values[np.isfinite(values)]
        return np.bincount(np.searchsorted(np.asarray(self.edges), finite, side="left"), minlength=len(self.fractions))

    def psi(self, counts: np.ndarray) -> float:
        """The PSI of a batch's bin counts against this reference (0 for no rows)."""
        total = counts.sum()
        if total == 0:
            return 0.0
        actual = np.maximum(counts / total, FLOOR)
        expected = np.maximum(np.asarray(self.fractions), FLOOR)
        return float(np.sum((actual - expected) * np.log(actual / expected)))


class DriftReference(BaseModel):
    """The training data's histograms, kept in the manifest: per source column, the latent
    KL and the validation score; per entity of a sensor fleet (up to MAX_ENTITIES), each
    numeric column's training mean and standard deviation."""

    features: dict[str, Histogram]
    latent: Histogram
    score: Histogram
    entities: dict[str, dict[str, tuple[float, float]]] = {}


class DriftReport(BaseModel):
    """A batch's drift from the model's reference, and what passed the rules' limits."""

    rows: int
    rules: DriftRules
    features: dict[str, float]  # PSI per source column
    latent: float  # PSI of the rows' KL from the prior
    score: float  # PSI of the scores against the validation scores
    drifting: list[str]  # columns whose PSI passed `rules.psi`, the largest first
    entities: dict[str, dict[str, float]] = {}  # per entity: its columns whose mean moved past `rules.shift` (in SDs)

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


def reference_of(rows: np.ndarray, blocks: Blocks, kl: np.ndarray, scores: np.ndarray,
                 entities: np.ndarray | None = None) -> DriftReference:
    """The reference from training rows (raw, one per time step: rows × row features), cut
    into source columns by `blocks` (name, its inputs, its categories or None), the validation
    rows' KL and scores, and (`entities`: each row's entity) every entity's own levels."""
    features = {name: (Histogram.of_categories(rows[:, cut], categories) if categories is not None
                       else Histogram.of_values(rows[:, cut.start].astype(np.float64)))
                for name, cut, categories in blocks}
    levels: dict[str, dict[str, tuple[float, float]]] = {}
    names: np.ndarray = np.unique(entities) if entities is not None else np.zeros(0)
    for entity in names if len(names) <= MAX_ENTITIES else []:
        mine = rows[entities == entity]
        levels[str(entity)] = {name: (float(np.nanmean(mine[:, cut.start])), float(np.nanstd(mine[:, cut.start])))
                               for name, cut, categories in blocks if categories is None}
    return DriftReference(features=features, latent=Histogram.of_values(kl.astype(np.float64)),
                          score=Histogram.of_values(scores.astype(np.float64)), entities=levels)


class DriftCounter:
    """A batch's bin counts and, per entity, sums, added chunk by chunk (memory: counts,
    never rows)."""

    def __init__(self, reference: DriftReference, blocks: Blocks) -> None:
        self.reference, self.blocks, self.rows = reference, blocks, 0
        self.features = {name: np.zeros(len(reference.features[name].fractions), np.int64) for name, _, _ in blocks}
        self.numeric = [(name, cut.start) for name, cut, categories in blocks if categories is None]
        self.sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(self.numeric)))
        self.counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(self.numeric)))
        self.latent = np.zeros(len(reference.latent.fractions), np.int64)
        self.score = np.zeros(len(reference.score.fractions), np.int64)

    def add(self, rows: np.ndarray, kl: np.ndarray, scores: np.ndarray,
            entities: list[tuple[str, int, int]] | None = None) -> None:
        """Count a chunk: its rows (raw, rows × row features), their KL and scores, and in
        sensor mode each entity's span of rows (name, start, stop)."""
        self.rows += len(rows)
        for name, cut, categories in self.blocks:
            values = rows[:, cut] if categories is not None else rows[:, cut.start]
            self.features[name] += self.reference.features[name].counts(values)
        if self.reference.entities and self.numeric:
            columns = rows[:, [at for _, at in self.numeric]].astype(np.float64)
            for entity, start, stop in entities or []:
                part = columns[start:stop]
                finite = np.isfinite(part)
                self.sums[entity] += np.where(finite, part, 0.0).sum(axis=0)
                self.counts[entity] += finite.sum(axis=0)
        self.latent += self.reference.latent.counts(kl.astype(np.float64))
        self.score += self.reference.score.counts(scores.astype(np.float64))

    def report(self, rules: DriftRules) -> DriftReport:
        psi = {name: self.reference.features[name].psi(counts) for name, counts in self.features.items()}
        entities = {}
        for entity in sorted(self.sums):
            levels = self.reference.entities.get(entity)
            if levels is None:  # an entity the model never saw: nothing of its own to compare with
                continue
            shifts = {}
            for (name, _), total, count in zip(self.numeric, self.sums[entity], self.counts[entity], strict=True):
                mean, sd = levels[name]
                if count >= MIN_ENTITY_ROWS and sd > 0 and abs(total / count - mean) / sd > rules.shift:
                    shifts[name] = round(float((total / count - mean) / sd), 3)
            if shifts:
                entities[entity] = dict(sorted(shifts.items(), key=lambda item: -abs(item[1])))
        return DriftReport(rows=self.rows, rules=rules, features={n: round(v, 4) for n, v in psi.items()},
                           latent=round(self.reference.latent.psi(self.latent), 4),
                           score=round(self.reference.score.psi(self.score), 4),
                           drifting=sorted((n for n, v in psi.items() if v > rules.psi), key=lambda n: -psi[n]),
                           entities=entities)
