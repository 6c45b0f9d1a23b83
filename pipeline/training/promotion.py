"""Retraining with promotion: a challenger trained on recent data replaces the champion (the
model's `latest`) only when it passes the config's `PromotionRules` on recent rows it never
saw. Every step is a plain function, so the flow (`flows/retrain.py`) only wraps them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from pipeline.artifact.manifest import LatestMoved, set_latest
from pipeline.artifact.versions import Decision, record_decision
from pipeline.core.config import PipelineConfig, PromotionRules, load_config, remembered_config
from pipeline.core.errors import DataError
from pipeline.data import ingest
from pipeline.data.windows import sort_for_windows
from pipeline.runtime import Scorer
from pipeline.training.fit import fit_model


@dataclass
class RecentSplit:
    """The recent data cut in two: what the challenger trains on (rows the champion flagged
    left out) and the latest rows, held out for the comparison."""

    train_file: Path
    holdout_file: Path
    train_rows: int
    left_out: int  # recent rows the champion flagged: not trained on
    holdout_rows: int


@dataclass
class Comparison:
    """Champion and challenger on the same held-out recent rows (normal ones: label 0 when
    there is a label column, else all of them)."""

    rows: int
    champion_false_alarms: float
    challenger_false_alarms: float
    challenger_score_psi: float  # its scores there against its own validation scores
    rank_agreement: float  # Spearman correlation of the two models' scores
    champion_auc: float | None = None  # on labelled held-out rows with both classes
    challenger_auc: float | None = None
    champion_recall: float | None = None  # the share of labelled anomalous held-out rows flagged
    challenger_recall: float | None = None


def split_recent(
    source: str | Path, champion: Scorer, rules: PromotionRules, folder: Path, label_column: str | None = None
) -> RecentSplit:
    """Read the recent data, keep its latest `rules.holdout` share (per entity, in time, for
    sensors; a seeded random share of a table) for the comparison, and write the rest, less
    the rows the champion flags (at most `rules.max_left_out` of them, the highest-scoring),
    as the challenger's training file. For sensors a left-out row is a gap in its series: set
    `max_gap` for windows to restart after it."""
    holdout = rules.holdout
    frame = _recent_rows(source, champion, label_column)
    schema = champion.schema
    if schema.mode == "sensor" and schema.time_column:
        # Repeats merged (or resampled) by the champion's own policy, so rows pair with its scores (N8).
        frame = sort_for_windows(frame, schema, file=str(source))[0]
        position = pl.int_range(pl.len())
        late = (position.over(schema.entity_column) if schema.entity_column else position) >= (
            (1 - holdout) * (pl.len().over(schema.entity_column) if schema.entity_column else pl.len())
        ).floor()
        held = frame.select(late.alias("held"))["held"].to_numpy()
    else:
        held = np.random.default_rng(0).random(frame.height) < holdout
    train, kept_back = frame.filter(pl.Series(~held)), frame.filter(pl.Series(held))
    if train.height == 0 or kept_back.height == 0:
        raise DataError(f"'{source}' has too few rows to train a challenger and keep {holdout:.0%} back.")
    scored = champion.score(train.drop(label_column) if label_column in train.columns else train)
    if scored.height != train.height:  # a repeated time merged (`duplicates`): rows no longer pair up
        raise DataError(f"'{source}' repeats times within an entity; drop the repeats before retraining on it.")
    flagged = scored["is_anomaly"].to_numpy()  # scored rows come back in the (sorted) order given
    most = int(rules.max_left_out * train.height)
    if flagged.sum() > most:  # the most anomalous of them only
        flagged = np.zeros(train.height, bool)
        flagged[np.argsort(-scored["score"].to_numpy(), kind="stable")[:most]] = True
    clean = train.filter(~flagged)
    folder.mkdir(parents=True, exist_ok=True)
    ingest.write_frame(clean, folder / "challenger-train.parquet")
    ingest.write_frame(kept_back, folder / "holdout.parquet")
    return RecentSplit(
        folder / "challenger-train.parquet",
        folder / "holdout.parquet",
        clean.height,
        train.height - clean.height,
        kept_back.height,
    )


def _recent_rows(source: str | Path, champion: Scorer, label_column: str | None) -> pl.DataFrame:
    """The recent files as one frame, each first checked as the champion reads its data, so a
    bad value is named by the user's file and row, never by a copy made for training (N8)."""
    frames = []
    for file in ingest.resolve_sources(source):
        frame = ingest.read_file(file, reading=champion.schema.csv)
        champion.prepare(frame.drop(label_column) if label_column in frame.columns else frame, file=str(file))
        frames.append(frame)
    return pl.concat(frames, how="vertical_relaxed")


def champion_config(champion: Scorer, path: str | Path | None = None, **overrides: object) -> PipelineConfig:
    """The challenger's configuration: the one the champion was trained with (every option
    and settled default its manifest keeps: data policies, model, threshold), a TOML file's
    sections over it, then `overrides` (N8: a retrain once ignored the champion's
    `duplicates` and `missing`, and needed a TOML repeating every `vad train` flag)."""
    return load_config(path, base=remembered_config(champion.manifest.training, str(champion.folder)), **overrides)


def train_challenger(split: RecentSplit, config: PipelineConfig, champion: Scorer, source: str | Path) -> Path:
    """Train and export the challenger as the model's next version, `latest` left where it
    is; its manifest names the champion as parent and the data it came from."""
    model_root = champion.folder.parent
    config = config.model_copy(update={"name": champion.manifest.name})
    lineage = {
        "parent_version": champion.manifest.version,
        "change": "retrained",
        "data": {
            "source": str(source),
            "rows": split.train_rows,
            "left_out_flagged": split.left_out,
            "held_out": split.holdout_rows,
        },
    }
    try:
        return fit_model(
            split.train_file, config, model_root.parent, lineage=lineage, make_latest=False, into=model_root
        ).version_dir  # beside the champion, whatever its folder is called (N20)
    except DataError as error:  # said of the user's data, not of the copy it was trained from (N8)
        said = f"the recent data from '{source}', less the rows the champion flags,"
        message = str(error).replace(f"file '{split.train_file}'", said).replace(f"'{split.train_file}'", said)
        raise DataError(message) from error


def compare(champion: Scorer, challenger: Scorer, holdout_file: Path, label_column: str | None = None) -> Comparison:
    """Both models on the held-out rows (see Comparison)."""
    frame = ingest.read_file(holdout_file)
    labels = frame[label_column].cast(pl.Float64).to_numpy() if label_column in frame.columns else None
    rows = frame.drop(label_column) if label_column in frame.columns else frame
    old, new = champion.score(rows), challenger.score(rows)
    if old.height != frame.height:  # readings merged (repeated times, resampling): rows no longer pair with labels
        raise DataError(
            f"'{holdout_file}' merges readings when scored; retraining compares models row by row, "
            "so drop repeated times, and retrain a resampled model with `vad train` instead."
        )
    normal = labels == 0 if labels is not None else np.ones(frame.height, bool)
    if champion.schema.mode == "sensor":  # scores come back sorted: take the labels along
        order = _sorted_order(frame, champion)
        normal = normal[order]
        labels = labels[order] if labels is not None else None
    old_scores, new_scores = old["score"].to_numpy(), new["score"].to_numpy()
    reference = challenger.manifest.drift
    psi = reference.score.psi(reference.score.counts(new_scores[normal])) if reference is not None else 0.0
    comparison = Comparison(
        rows=int(normal.sum()),
        champion_false_alarms=float(old["is_anomaly"].to_numpy()[normal].mean()),
        challenger_false_alarms=float(new["is_anomaly"].to_numpy()[normal].mean()),
        challenger_score_psi=round(psi, 4),
        rank_agreement=round(float(spearmanr(old_scores[normal], new_scores[normal]).statistic), 4),
    )
    if labels is not None and len(np.unique(labels)) == 2:
        comparison.champion_auc = round(float(roc_auc_score(labels, old_scores)), 4)
        comparison.challenger_auc = round(float(roc_auc_score(labels, new_scores)), 4)
        anomalous = labels == 1
        comparison.champion_recall = round(float(old["is_anomaly"].to_numpy()[anomalous].mean()), 4)
        comparison.challenger_recall = round(float(new["is_anomaly"].to_numpy()[anomalous].mean()), 4)
    return comparison


def decide(comparison: Comparison, rules: PromotionRules) -> tuple[bool, list[str]]:
    """Whether the challenger passes every rule, and each rule's verdict in words."""
    c = comparison
    checks = []
    if rules.max_false_alarm_rise is not None:
        checks.append(
            (
                c.challenger_false_alarms <= c.champion_false_alarms + rules.max_false_alarm_rise,
                f"false alarms on recent normal rows {c.challenger_false_alarms:.1%}, at most the champion's "
                f"{c.champion_false_alarms:.1%} + {rules.max_false_alarm_rise:.1%}",
            )
        )
    checks += [
        (
            c.challenger_false_alarms <= rules.max_false_alarms,
            f"false alarms on recent normal rows {c.challenger_false_alarms:.1%}, at most {rules.max_false_alarms:.1%} "
            "whatever the champion's",
        ),
        (
            c.challenger_score_psi <= rules.max_score_psi,
            f"score stability: PSI {c.challenger_score_psi:.3f} against its validation scores, "
            f"at most {rules.max_score_psi}",
        ),
        (
            c.rank_agreement >= rules.min_rank_agreement,
            f"rank agreement with the champion {c.rank_agreement:.3f}, at least {rules.min_rank_agreement}",
        ),
    ]
    if c.champion_auc is not None and c.challenger_auc is not None:
        checks.append(
            (
                c.challenger_auc >= c.champion_auc - rules.max_auc_loss,
                f"ROC-AUC on labelled rows {c.challenger_auc:.3f} (champion {c.champion_auc:.3f}), "
                f"at most {rules.max_auc_loss} lower",
            )
        )
    if rules.max_recall_loss is not None and c.champion_recall is not None and c.challenger_recall is not None:
        checks.append(
            (
                c.challenger_recall >= c.champion_recall - rules.max_recall_loss,
                f"recall on labelled anomalous rows {c.challenger_recall:.1%} (champion {c.champion_recall:.1%}), "
                f"at most {rules.max_recall_loss:.1%} lower",
            )
        )
    passed = all(ok for ok, _ in checks)
    return passed, [("pass: " if ok else "FAIL: ") + text for ok, text in checks]


def settle(champion: Scorer, challenger_dir: Path, comparison: Comparison, rules: PromotionRules) -> Decision:
    """Decide, move `latest` to the challenger when it passed, and log the decision beside
    the versions (`vad versions` shows it)."""
    promoted, reasons = decide(comparison, rules)
    model_root = champion.folder.parent
    if promoted:
        try:  # only over the champion it was compared with (N21: an operator's newer latest was overwritten)
            set_latest(model_root, challenger_dir.name, expected=champion.manifest.version)
        except LatestMoved as moved:
            promoted, reasons = False, [*reasons, f"FAIL: {moved}"]
    return record_decision(
        model_root, challenger_dir.name, promoted, reasons, {"champion": champion.manifest.version, **asdict(comparison)}
    )


def _sorted_order(frame: pl.DataFrame, scorer: Scorer) -> np.ndarray:
    """The positions of `frame`'s rows in the order a sensor model scores them (entity, time)."""
    return frame.with_row_index("__n").sort(_series_keys(scorer), maintain_order=True)["__n"].to_numpy()


def _series_keys(scorer: Scorer) -> list[str]:
    """The columns a sensor model orders its rows by: entity, then time."""
    return [k for k in (scorer.schema.entity_column, scorer.schema.time_column) if k]
