"""A floor on each feature's scale in the scored likelihood (issue 46), emulated on exported
models before any graph changes (an experiment: findings go to bench/NOTES.md).

    python bench/scale_floor.py

The cause it tests: SKAB's thermocouple moves 0.021 °C in its 400 training rows, so later
normal rows lie hundreds of training spreads away and the unit Gaussian of the scaled inputs
charges them hundreds of nats (bench/NOTES.md, 2026-12-02 and 2026-12-07, has the figures).

Each series is trained by `vad train` at defaults (a unit Gaussian on standardised inputs for
these continuous sensors), and scored with the model's own scorer graph. Its per-input terms
are re-read with the scale floored: σ_i = max(1, φ_c / scale_i) in scaled units, for a
reference spread φ_c of input i's source column c in raw units, and
nll'_i = ½ d² / σ_i² + log σ_i + ½ log 2π + log scale_i, with d² read back from the graph's
nll_i = ½ d² + ½ log 2π + log scale_i (exact for a unit density: the members share σ_i).
The step rule then runs as the product runs it; the threshold is the training rows' 99th
percentile of step scores, for the floored score and, alike, for the unfloored one, so the two
columns compare the scores and not their calibrations.

Reference spreads φ_c tried, all from the training rows alone:
- level: r × |median| (a reading's relative precision);
- resolution: k × the median gap between distinct sorted values (the sensor's quantisation).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


from alarms import DATA, SKAB_FILES, SKAB_TRAIN_ROWS, nab_result, nab_score, vad  # noqa: E402
from calibrators import halves  # noqa: E402

from pipeline.core.config import AlarmRule  # noqa: E402
from pipeline.runtime import Scorer  # noqa: E402
from pipeline.runtime.scorer import ScoreArrays  # noqa: E402
from pipeline.runtime.steps import onsets  # noqa: E402

HALF_LOG_2PI = 0.5 * np.log(2 * np.pi)


def trained(frame: pl.DataFrame, train_rows: int, root: Path, time_column: str = "datetime") -> Path:
    root.mkdir(parents=True)
    frame[:train_rows].write_csv(root / "train.csv", separator=";")
    result = vad(
        "train", str(root / "train.csv"), "--name", "m", "--out", str(root / "models"), "--mode", "sensor",
        "--time-column", time_column, "--duplicates", "last", "--no-progress",
    )  # fmt: skip
    return Path(result["version_dir"])


def nab_series() -> dict[str, tuple[pl.DataFrame, int, list]]:
    labels = json.loads((DATA / "nab" / "combined_windows.json").read_text())
    out = {}
    for name in sorted(labels):
        # a repeated timestamp (2 series) is merged as `--duplicates last` does, so steps and rows align
        frame = pl.read_csv(DATA / "nab" / name, try_parse_dates=True).unique("timestamp", keep="last", maintain_order=True)
        out[name] = (frame, nab_score.prob_length(frame.height), labels[name])
    return out


def nab_halves_figures(nab: dict, steps: dict[str, np.ndarray], margin: float) -> dict[str, float]:
    """NAB standard score per half: flags past the margin, alarms their onsets (default rule)."""
    rule = AlarmRule()
    runs = {}
    for name, (frame, train_rows, windows) in nab.items():
        flags = flags_of(steps[name], train_rows, margin, 1, 1)
        alarms = onsets(flags, [(0, len(flags))], rule.hold_off, rule.quiet)[0]
        runs[name] = {"timestamps": frame["timestamp"].cast(pl.String).to_list(), "windows": windows, "alarm": alarms}
    return {half: nab_result({n: runs[n] for n in names}, "alarm")["standard"] for half, names in halves(list(nab)).items()}


def references(train: pl.DataFrame, columns: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for column in columns:
        values = train[column].drop_nulls().to_numpy().astype(np.float64)
        distinct = np.unique(values)
        gaps = np.diff(distinct)
        out[column] = {"level": abs(float(np.median(values))), "resolution": float(np.median(gaps)) if len(gaps) else 0.0}
    return out


def floored_scorer(scorer: Scorer, sigma: np.ndarray) -> Scorer:
    """The scorer with its per-input terms re-read under the floor σ (scaled units)."""
    scale = np.asarray(scorer.manifest.scaler.scale, np.float64)
    constant = HALF_LOG_2PI + np.log(scale)
    original = scorer.score_array

    def score_array(x: np.ndarray, *_: object, **__: object) -> ScoreArrays:  # elbo: the per-input terms
        arrays = original(x)
        nll = arrays.feature_nll.astype(np.float64)
        square = 2.0 * (nll - constant)
        floored = 0.5 * square / sigma**2 + np.log(sigma) + constant
        score = arrays.score.astype(np.float64) - nll.sum(axis=1) + floored.sum(axis=1)
        return ScoreArrays(score.astype(np.float32), floored.astype(np.float32))

    scorer.score_array = score_array  # type: ignore[method-assign]
    return scorer


def step_scores(version_dir: Path, frame: pl.DataFrame, train_rows: int, sigma_of) -> np.ndarray:
    """The product's step scores of `frame`, the scale floored where `sigma_of` gives one."""
    scorer = Scorer.load(version_dir)
    sigma = sigma_of(scorer, frame[:train_rows])
    if sigma is not None:
        scorer = floored_scorer(scorer, sigma)
    features = frame.drop([c for c in ("anomaly", "changepoint") if c in frame.columns])
    return scorer.score(features, threshold=1e30)["score"].to_numpy()


def flags_of(steps: np.ndarray, train_rows: int, margin: float, k: int, n: int) -> np.ndarray:
    """Causal flags: the step past median + margin × (q99 − median) of the training steps, in
    at least k of the last n steps."""
    median, q99 = np.median(steps[:train_rows]), np.quantile(steps[:train_rows], 0.99)
    above = (steps > median + margin * (q99 - median)).astype(np.int64)
    counts = np.convolve(above, np.ones(n, np.int64))[: len(steps)]
    return counts >= k


def skab_figures(steps: list[np.ndarray], frames: list[pl.DataFrame], rule: tuple) -> tuple[float, float, float]:
    """SKAB F1, FAR, MAR over the files' rows after the first 400."""
    tp = fp = fn = tn = 0
    for series, frame in zip(steps, frames, strict=True):
        flags = flags_of(series, SKAB_TRAIN_ROWS, *rule)[SKAB_TRAIN_ROWS:]
        labels = frame["anomaly"].to_numpy().astype(bool)[SKAB_TRAIN_ROWS:]
        tp, fp = tp + int((flags & labels).sum()), fp + int((flags & ~labels).sum())
        fn, tn = fn + int((~flags & labels).sum()), tn + int((~flags & ~labels).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1), fp / max(fp + tn, 1), fn / max(fn + tp, 1)


def sigma_by(kind: str, factor: float):
    def sigma_of(scorer: Scorer, train: pl.DataFrame) -> np.ndarray:
        """σ per input from the training rows `train`."""
        names = [name.split("[")[0] for name in scorer.manifest.input_names]
        refs = references(train, sorted(set(names)))
        scale = np.asarray(scorer.manifest.scaler.scale, np.float64)
        phi = np.array([factor * refs[name][kind] for name in names])
        return np.maximum(1.0, phi / scale)

    return sigma_of


def main() -> None:
    logging.disable(logging.WARNING)  # the steps are scored under a threshold of 1e30 on purpose
    frames = [pl.read_csv(DATA / "skab" / name, separator=";") for name in SKAB_FILES]
    free = pl.read_csv(DATA / "skab" / "anomaly-free" / "anomaly-free.csv", separator=";")
    cut = int(0.7 * free.height)
    with tempfile.TemporaryDirectory(prefix="vad-floor-") as tmp:
        dirs = [
            trained(frame.drop("anomaly", "changepoint"), SKAB_TRAIN_ROWS, Path(tmp) / f"skab{i}")
            for i, frame in enumerate(frames)
        ]
        free_dir = trained(free, cut, Path(tmp) / "free")
        nab = nab_series()
        nab_dirs = {
            name: trained(frame, train_rows, Path(tmp) / f"nab{i}", "timestamp")
            for i, (name, (frame, train_rows, _)) in enumerate(nab.items())
        }
        print(json.dumps({str(d): Scorer.load(d).manifest.model["likelihood"] for d in dirs[:1]}))
        candidates = [("no floor", lambda scorer, frame: None)]
        candidates += [(f"level × {r}", sigma_by("level", r)) for r in (0.003, 0.01, 0.02, 0.03)]
        candidates += [("resolution × 10", sigma_by("resolution", 10))]
        rules = [(m, k, n) for m in (1.0, 1.5, 2.0, 3.0) for k, n in ((1, 1), (10, 20))]
        head = f"{'floor':18} {'margin, k of n':>15} {'SKAB F1':>8} {'FAR':>7} {'MAR':>7} {'free':>7}"
        print(f"{head} {'NAB A':>6} {'NAB B':>6}")
        for label, sigma_of in candidates:
            steps = [step_scores(d, frame, SKAB_TRAIN_ROWS, sigma_of) for d, frame in zip(dirs, frames, strict=True)]
            free_steps = step_scores(free_dir, free, cut, sigma_of)
            nab_steps = {name: step_scores(nab_dirs[name], nab[name][0], nab[name][1], sigma_of) for name in nab}
            for rule in rules:
                f1, far, mar = skab_figures(steps, frames, rule)
                share = float(flags_of(free_steps, cut, *rule)[cut:].mean())
                by_half = nab_halves_figures(nab, nab_steps, rule[0]) if rule[1:] == (1, 1) else {"A": np.nan, "B": np.nan}
                print(
                    f"{label:18} {rule[0]:>6} {rule[1]:>3} of {rule[2]:<3} {f1:8.3f} {far:7.1%} {mar:7.1%} {share:7.2%}"
                    f" {by_half['A']:6.1f} {by_half['B']:6.1f}"
                )


if __name__ == "__main__":
    main()
