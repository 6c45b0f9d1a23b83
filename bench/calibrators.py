"""Candidate score-to-alarm rules for issue 46, measured on the same `vad` scores as the
defaults, before any becomes one (an experiment: its findings go to bench/NOTES.md).

    python bench/calibrators.py            # trains and scores once (cached), then every candidate

Every series is trained by `vad train` and scored by `vad score` at their defaults, as
bench/alarms.py does; the candidates then turn each series' step scores into alarms causally
(row t reads rows up to t). NAB's 24 series are split into two halves stratified by category
(artificial, AWS, ad exchange, known cause, traffic, tweets): a candidate's parameters are
chosen on one half and reported on the other, both ways. SKAB (5 files, the leaderboard
protocol) and the anomaly-free SKAB stream are reported for every candidate.

A candidate: the step score's moving average over `window` steps, judged against the mean
and spread of that average over the series' last `history` steps that were not in an open
episode (frozen while one is open, so a sustained fault does not become normal), seeded by
the training period's scores; the spread is floored at `floor` × (the model's threshold −
its median validation score), so a quiet series does not alarm on noise. A step is flagged
when its z passes `z`, and, with `gate`, its score passes the model's threshold too; alarms
are flags' onsets under the product's quiet / hold-off rule.
"""

from __future__ import annotations

import itertools
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from alarms import DATA, SKAB_FILES, SKAB_TRAIN_ROWS, nab_result, nab_runs, train_and_score  # noqa: E402

from pipeline.core.config import AlarmRule  # noqa: E402
from pipeline.runtime.steps import onsets  # noqa: E402

CACHE = ROOT / "bench" / ".cache" / "calibrators.pkl"  # generated, never committed (.gitignore)


def halves(names: list[str]) -> dict[str, list[str]]:
    """Two halves of the NAB series, each category split between them (artificial series with
    and without anomalies count as one category), the odd one out alternating."""
    kinds: dict[str, list[str]] = {}
    for name in sorted(names):
        kinds.setdefault(name.split("/")[0].replace("NoAnomaly", "WithAnomaly"), []).append(name)
    split: dict[str, list[str]] = {"A": [], "B": []}
    turn = 0
    for members in kinds.values():
        for member in members:
            split["AB"[turn % 2]].append(member)
            turn += 1
    return split


def calibrated(
    score: np.ndarray,
    seed: int,
    margin: float,
    threshold: float,
    window: int,
    history: int,
    floor: float,
    z: float,
    gate: bool,
    freeze: int | None = None,
) -> np.ndarray:
    """Causal flags: the moving average's z against an exponentially weighted mean and variance
    of its unflagged past (weight 1/history: two numbers of state per entity, as a stream
    state can carry), seeded by the training rows. With `freeze`, a run of that many flagged
    steps is taken as the new normal: the history learns again."""
    smooth = np.convolve(score, np.ones(window) / window)[: len(score)]
    smooth[: window - 1] = np.cumsum(score[: window - 1]) / np.arange(1, window)
    mean, var = float(smooth[:seed].mean()), float(smooth[:seed].var())
    alpha, spread_floor = 1.0 / history, max(floor * margin, 1e-9)
    flags = np.zeros(len(score), dtype=bool)
    run = 0
    for t in range(seed, len(score)):
        sd = max(var**0.5, spread_floor)
        flags[t] = (smooth[t] - mean) / sd > z and (not gate or score[t] > threshold)
        run = run + 1 if flags[t] else 0
        if not flags[t] or (freeze is not None and run > freeze):  # frozen while flagged: a fault stays abnormal
            delta = smooth[t] - mean
            mean += alpha * delta
            var = (1 - alpha) * (var + alpha * delta * delta)
    return flags


def alarms_of(flags: np.ndarray) -> np.ndarray:
    rule = AlarmRule()
    return onsets(flags, [(0, len(flags))], rule.hold_off, rule.quiet)[0]


def gather(root: Path) -> dict:
    """The NAB runs, SKAB files and the anomaly-free stream, trained and scored once."""
    runs = nab_runs(root)
    skab = []
    for name in SKAB_FILES:
        frame = pl.read_csv(DATA / "skab" / name, separator=";")
        features = frame.drop("anomaly", "changepoint")
        scored, manifest = train_and_score(
            features[:SKAB_TRAIN_ROWS], features, root / "skab" / name.replace("/", "_"), "datetime", separator=";"
        )
        skab.append(_series(scored, manifest) | {"labels": frame["anomaly"].to_numpy().astype(bool)})
    stream = pl.read_csv(DATA / "skab" / "anomaly-free" / "anomaly-free.csv", separator=";")
    cut = int(0.7 * stream.height)
    scored, manifest = train_and_score(stream[:cut], stream, root / "anomaly-free", "datetime", separator=";")
    return {"nab": runs, "skab": skab, "free": _series(scored, manifest) | {"cut": cut}}


def _series(scored: pl.DataFrame, manifest: dict) -> dict:
    return {
        "score": scored["score"].to_numpy(),
        "flag": scored["is_anomaly"].to_numpy().astype(bool),
        "threshold": manifest["threshold"]["value"],
        "normal": manifest["validation"]["score_quantiles"]["0.5"],
    }


def measure(data: dict, params: dict | None) -> dict:
    """NAB per half (standard, low FP), SKAB F1 / FAR, the anomaly-free share, for one candidate
    (None: the product's defaults)."""

    def flags_of(run: dict, seed: int) -> np.ndarray:
        if params is None:
            return run["flag"]
        margin = max(run["threshold"] - run["normal"], 1e-9)
        return calibrated(run["score"], seed, margin, run["threshold"], **params)

    nab = data["nab"]
    split = halves(list(nab))
    alarm = {name: alarms_of(flags_of(run, run["train_rows"])) for name, run in nab.items()}
    out = {}
    for half, names in split.items():
        result = nab_result({n: nab[n] for n in names}, values=lambda run: alarm[_name(nab, run)])
        out[half] = (result["standard"], result["reward_low_FP_rate"])
    tp = fp = fn = tn = 0
    for run in data["skab"]:
        flags, labels = flags_of(run, SKAB_TRAIN_ROWS)[SKAB_TRAIN_ROWS:], run["labels"][SKAB_TRAIN_ROWS:]
        tp, fp = tp + int((flags & labels).sum()), fp + int((flags & ~labels).sum())
        fn, tn = fn + int((~flags & labels).sum()), tn + int((~flags & ~labels).sum())
    out["skab"] = (2 * tp / max(2 * tp + fp + fn, 1), fp / max(fp + tn, 1))
    free = data["free"]
    out["free"] = float(flags_of(free, free["cut"])[free["cut"] :].mean())
    return out


def _name(runs: dict, run: dict) -> str:
    return next(name for name, other in runs.items() if other is run)


WINDOWS = (1, 5, 10)


def main(
    refresh: bool = typer.Option(False, help="Train and score again (else the cache is used)."),
    wide: bool = typer.Option(False, help="The first, wide grid (gate on and off); else the gated, narrower one."),
) -> None:
    if refresh or not CACHE.exists():
        with tempfile.TemporaryDirectory(prefix="vad-calibrators-") as tmp:
            data = gather(Path(tmp))
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_bytes(pickle.dumps(data))  # our own cache of numpy arrays, written just above
    data = pickle.loads(CACHE.read_bytes())
    grid = [
        dict(zip(("window", "history", "floor", "z", "gate", "freeze"), values, strict=True))
        for values in itertools.product(
            WINDOWS if wide else (1, 10),
            (500, 2000) if wide else (250, 500, 1000),
            (0.1, 0.5) if wide else (0.05, 0.1, 0.2),
            (3.0, 4.0, 5.0) if wide else (3.0, 3.5, 4.0),
            (False, True) if wide else (True,),
            (None,) if wide else (None, 100, 400),
        )
    ]
    results = [(None, measure(data, None))] + [(params, measure(data, params)) for params in grid]
    print("split:", {k: len(v) for k, v in halves(list(data["nab"])).items()})
    print(f"{'candidate':70} {'A std/lowFP':>14} {'B std/lowFP':>14} {'SKAB F1/FAR':>14} {'free':>7}")
    for params, r in results:
        label = "defaults" if params is None else " ".join(f"{k}={v}" for k, v in params.items())
        print(
            f"{label:70} {r['A'][0]:6.1f}/{r['A'][1]:6.1f} {r['B'][0]:6.1f}/{r['B'][1]:6.1f} "
            f"{r['skab'][0]:6.3f}/{r['skab'][1]:6.1%} {r['free']:7.2%}"
        )
    for chosen, reported in (("A", "B"), ("B", "A")):
        params, r = max(results[1:], key=lambda item: item[1][chosen][0])
        print(f"chosen on {chosen} ({r[chosen][0]:.1f}): {params} -> {reported} {r[reported][0]:.1f}")


if __name__ == "__main__":
    typer.run(main)
