"""Do thresholds mean what they say? Two measurements on SKAB (issue 16), through the product path
(`fit_model` with every default, then the exported scorer's own `is_anomaly`):

    python bench/thresholds.py      # writes the "Thresholds" section of BENCHMARKS.md

1. False-alarm calibration: train on the first 70% of SKAB's anomaly-free stream, score the last
   30% (all normal): the share flagged against each method's target false-alarm rate.
2. SKAB's outlier leaderboard protocol: for each labelled experiment, train on its first 400
   rows and flag the rest; TP/FP/FN/TN counted point by point over all files; F1, false-alarm
   rate (FAR) and missed-alarm rate (MAR) beside the published figures.

Rules other than the defaults are evaluated on the same scores (a threshold never changes a
score), so each row of a block differs from the default row in its threshold rule alone."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import typer
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sections import markdown_blocks, print_blocks, replace_section  # noqa: E402

from pipeline.core.config import ThresholdConfig, load_config  # noqa: E402
from pipeline.runtime import Scorer, persistent  # noqa: E402
from pipeline.training.calibrate import fit_threshold  # noqa: E402
from pipeline.training.fit import fit_model  # noqa: E402

SENSORS = [
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
]
EXPERIMENTS = ["valve1/0.csv", "valve2/0.csv", "valve2/1.csv", "valve2/2.csv", "valve2/3.csv"]
# SKAB's published outlier leaderboard for the same protocol: (F1, FAR, MAR); None where not quoted.
LEADERBOARD = {
    "Conv-AE": (0.79, 0.137, 0.178),
    "MSET": (0.73, None, None),
    "LSTM-AE": (0.68, None, None),
    "T²+Q (PCA)": (0.67, None, None),
    "LSTM-VAE": (0.56, None, None),
    "IsolationForest": (0.40, 0.069, None),
}
Rule = Callable[[np.ndarray], float]


def spread_margin(c: float) -> Rule:
    """median + c · (0.99 quantile − median) of the validation scores: a margin in the scores'
    own units, scale-free (a multiple of the quantile, as the leaderboard's ×4/3, is not)."""
    return lambda v: float(np.median(v) + c * (np.quantile(v, 0.99) - np.median(v)))


ALTERNATIVES: dict[str, Rule] = {f"median + {c:g} × (q0.99 − median)": spread_margin(c) for c in (2, 3, 4)}


def config(name: str):
    return load_config(
        None,
        name=name,
        train={"progress": False},
        data={
            "mode": "sensor",
            "time_column": "datetime",
            "features": SENSORS,
            "separator": ";",
            "ignore_columns": ["anomaly", "changepoint"],
        },
    )


def train_and_score(train: pl.DataFrame, test: pl.DataFrame, root: Path) -> tuple[np.ndarray, pl.DataFrame, Scorer]:
    """Validation scores of a default model trained on `train`, and `test` scored by its export."""
    root.mkdir(parents=True, exist_ok=True)
    source = root / "train.csv"
    train.write_csv(source, separator=";")
    outcome = fit_model(source, config("skab"), root / "models")
    scorer = Scorer.load(outcome.version_dir)
    return outcome.calibrated.validation_scores, scorer.score(test), scorer


def calibration(data: Path, root: Path) -> list[tuple[str, str, str]]:
    stream = pl.read_csv(data / "anomaly-free" / "anomaly-free.csv", separator=";")
    cut = int(0.7 * stream.height)
    validation, scored, scorer = train_and_score(stream[:cut], stream[cut:], root)
    test = scored["score"].to_numpy()
    rows = []
    for settings, target in (
        (ThresholdConfig(method="quantile", quantile=0.99), 0.01),
        (ThresholdConfig(method="contamination", contamination=0.01), 0.01),
        (ThresholdConfig(method="pot", pot_risk=1e-3), 1e-3),
    ):
        fitted = fit_threshold(validation, settings)
        flagged = float(np.mean(test > fitted.value))
        default = " (the default)" if settings.method == scorer.manifest.threshold.method else ""
        rows.append(
            (
                f"{settings.method}{default}, target {target:.1%}",
                f"{flagged:.2%} flagged",
                f"{flagged / target:.1f}× target{'; ' + fitted.note if fitted.note else ''}",
            )
        )
    for name, rule in ALTERNATIVES.items():
        flagged = float(np.mean(test > rule(validation)))
        rows.append((f"{name}, against 1%", f"{flagged:.2%} flagged", f"{flagged / 0.01:.1f}× 1%"))
    tenths = [f"{np.mean(part > np.quantile(validation, 0.99)):.0%}" for part in np.array_split(test, 10)]
    rows.append(
        (
            "quantile 0.99, flagged per tenth of the scored 30%, in time order",
            " ".join(tenths),
            "the stream drifts away from its training part",
        )
    )
    return rows


def leaderboard(data: Path, root: Path) -> list[tuple[str, str, str]]:
    runs = []
    for name in EXPERIMENTS:
        frame = pl.read_csv(data / name, separator=";")
        validation, scored, scorer = train_and_score(frame[:400], frame[400:], root)
        labels = frame[400:]["anomaly"].to_numpy().astype(bool)  # time-ordered already: one series
        runs.append((validation, scored["score"].to_numpy(), scored["is_anomaly"].to_numpy(), labels))

    def counts(flag: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> str:
        """Point-by-point totals over every experiment of `flag(validation scores, scores, product flags)`."""
        tp = fp = fn = tn = 0
        for validation, scores, product, labels in runs:
            flags = flag(validation, scores, product)
            tp, fp = tp + int((flags & labels).sum()), fp + int((flags & ~labels).sum())
            fn, tn = fn + int((~flags & labels).sum()), tn + int((~flags & ~labels).sum())
        precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        return f"F1 {f1:.3f}, FAR {fp / max(fp + tn, 1):.1%}, MAR {fn / max(fn + tp, 1):.1%}"

    flagged = [f"{run[2].mean():.0%}" for run in runs]
    rows = [
        (
            "vad, every default (the product's own `is_anomaly`)",
            counts(lambda v, s, product: product),
            f"flagged per file: {' '.join(flagged)}",
        )
    ]
    for name, rule in ALTERNATIVES.items():
        rows.append((f"vad, {name}", counts(lambda v, s, _, rule=rule: s > rule(v)), ""))
        rows.append(
            (
                f"vad, {name}, 5 of the last 10 rows",
                counts(lambda v, s, _, rule=rule: persistent(s > rule(v), [(0, len(s))], 5, 10)),
                "",
            )
        )
    rows.append(("flag every row", counts(lambda v, s, _: np.ones(len(s), bool)), ""))
    # What no threshold rule can beat: per file, the threshold read off the labels that flags
    # exactly 10% of its normal rows (the bar's FAR), and how well the scores rank at all.
    oracle = {id(run[1]): np.quantile(run[1][~run[3]], 0.90) for run in runs}
    aucs = " ".join(f"{roc_auc_score(run[3], run[1]):.2f}" for run in runs)
    rows.append(
        (
            "oracle: each file's threshold set from its labels at FAR 10%",
            counts(lambda v, s, _: s > oracle[id(s)]),
            f"a bound for any threshold rule on these scores; ROC-AUC per file: {aucs}",
        )
    )
    for method, (f1, far, mar) in LEADERBOARD.items():
        rows.append(
            (
                f"published: {method}",
                f"F1 {f1:.2f}"
                + (f", FAR {far:.1%}" if far is not None else "")
                + (f", MAR {mar:.1%}" if mar is not None else ""),
                "SKAB leaderboard",
            )
        )
    return rows


def main(data: Path = ROOT.parent / "shared" / "data" / "skab", write: bool = True) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vad-thresholds-") as tmp:
        blocks = {
            "False-alarm calibration (anomaly-free stream: train on the first 70%, score the last 30%)": calibration(
                data, Path(tmp) / "calibration"
            ),
            "SKAB outlier leaderboard protocol (5 experiments: train on the first 400 rows, flag the rest)": leaderboard(
                data, Path(tmp) / "leaderboard"
            ),
        }
    wall = time.perf_counter() - started
    print_blocks(blocks)
    if write:
        write_section(blocks, wall)


def write_section(blocks: dict[str, list[tuple[str, str, str]]], wall: float) -> None:
    tables = markdown_blocks(blocks)
    section = f"""## Thresholds (issue 16)

Command: `python bench/thresholds.py` ({wall / 60:.1f} min, one run). Sensor mode, windows of 10,
every other setting at its default; scores from the exported scorer, flags from `is_anomaly`.

{tables}
"""
    replace_section(ROOT / "BENCHMARKS.md", "thresholds", section)


if __name__ == "__main__":
    typer.run(main)
