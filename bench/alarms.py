"""The alarm stream as an operator gets it (issue 32), in one command, from the command line:

    python bench/alarms.py            # prints the tables, writes the "Alarms" section of BENCHMARKS.md

Every model is trained by `vad train` and scored by `vad score`, each at its defaults (sensor mode,
the data's time column), exactly as a user runs them; nothing is swept unless a line says so.

1. NAB's protocol on the 12 NAB series in ../shared/data/nab: train on each series' probationary
   period (its first 15%, at most 750 rows), score the whole series, and score the product's own
   `alarm` column with NAB's scorer (../shared/tools/nab_score.py, standard and reward-low-FP
   profiles), beside the published detectors' figures with their swept thresholds. Also the raw
   score with a corpus-wide sweep (each series' score as a multiple of its own threshold margin),
   `is_anomaly` as the alarm, and the hold-off's halves table (choose on half A, report on half B).
2. SKAB's outlier leaderboard protocol on the 5 SKAB files: train on the first 400 rows of each,
   score the file, count `is_anomaly` point by point over the rest of every file: F1, FAR, MAR.
3. The anomaly-free SKAB stream: train on its first 70%, score it all; the share of its last 30%
   flagged (the target is 1%), and the alarms raised there.
4. Every training period's own flagged share (the target is 1%).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import typer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "tools"))

import nab_score  # noqa: E402
from sections import markdown_blocks, print_blocks, replace_section  # noqa: E402

from pipeline.core.config import AlarmRule  # noqa: E402
from pipeline.runtime.steps import onsets  # noqa: E402

VAD = str(Path(sys.executable).with_name("vad"))
SKAB_FILES = ["valve1/0.csv", "valve2/0.csv", "valve2/1.csv", "valve2/2.csv", "valve2/3.csv"]
SKAB_TRAIN_ROWS = 400
# Published on the same 12 series, each with a threshold swept over them (nab/reference/README.md).
NAB_PUBLISHED = {
    "numenta (HTM)": (72.8, 68.8),
    "randomCutForest": (67.1, 57.6),
    "knncad": (65.2, 52.8),
    "contextOSE": (62.6, 58.4),
    "ARTime": (60.2, 46.8),
    "random": (34.2, 22.7),
}
SKAB_PUBLISHED = {
    "Conv-AE": "F1 0.79, FAR 13.7%, MAR 17.8%",
    "MSET": "F1 0.73",
    "LSTM-AE": "F1 0.68",
    "Isolation forest": "F1 0.40, FAR 6.9%",
}
QUIETS, HOLD_OFFS = (0, 25, 50, 100, 200), (0, 100, 200, 400, 800)  # the halves grid of AlarmRule


def vad(*args: str) -> dict:
    """Run `vad` as a user does (its own process, start-up included); its --json result."""
    done = subprocess.run([VAD, *args, "--json"], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"vad {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_and_score(
    train: pl.DataFrame, whole: pl.DataFrame, root: Path, time_column: str, separator: str = ","
) -> tuple[pl.DataFrame, dict]:
    """`vad train` on `train`, `vad score` on `whole`: the scores joined back onto `whole`'s
    times (a repeated time is merged by `--duplicates last`, and both rows get its scores),
    and the model's manifest."""
    root.mkdir(parents=True, exist_ok=True)
    train.write_csv(root / "train.csv", separator=separator)
    whole.write_csv(root / "whole.csv", separator=separator)
    trained = vad(
        "train",
        str(root / "train.csv"),
        "--name",
        "m",
        "--out",
        str(root / "models"),
        "--mode",
        "sensor",
        "--time-column",
        time_column,
        "--duplicates",
        "last",
        "--no-progress",
    )
    vad("score", trained["version_dir"], str(root / "whole.csv"), "--output", str(root / "scores.parquet"))
    scores = pl.read_parquet(root / "scores.parquet")
    times = whole.select(pl.col(time_column).str.to_datetime(time_unit=scores[time_column].dtype.time_unit))
    joined = times.join(scores, on=time_column, how="left", maintain_order="left")
    if joined["score"].null_count():
        raise RuntimeError(f"{joined['score'].null_count()} rows of {root / 'whole.csv'} got no score")
    return joined, json.loads((Path(trained["version_dir"]) / "manifest.json").read_text())


# ------------------------------------------------------------------------------------- NAB
def nab_runs(root: Path) -> dict[str, dict]:
    labels = json.loads((DATA / "nab" / "combined_windows.json").read_text())
    runs = {}
    for name in sorted(labels):
        frame = pl.read_csv(DATA / "nab" / name)
        train_rows = nab_score.prob_length(frame.height)
        folder = root / "nab" / name.replace("/", "__")
        scored, manifest = train_and_score(frame[:train_rows], frame, folder, "timestamp")
        runs[name] = {
            "timestamps": frame["timestamp"].to_list(),
            "train_rows": train_rows,
            "windows": labels[name],
            "score": scored["score"].to_numpy(),
            "flag": scored["is_anomaly"].to_numpy().astype(bool),
            "alarm": scored["alarm"].to_numpy().astype(bool),
            "threshold": manifest["threshold"]["value"],
            "normal": manifest["validation"]["score_quantiles"]["0.5"],
        }
    return runs


def nab_result(
    runs: dict[str, dict], column: str | None = None, values=None, subset=None, sweep: bool = False
) -> dict[str, float]:
    """NAB's normalised score (standard, low FP) of one column of every run, at 0.5 or swept."""
    files = [
        nab_score.FileSweep(name, run["timestamps"], (values(run) if values else run[column]).astype(float), run["windows"])
        for name, run in runs.items()
    ]
    out = {}
    for profile in ("standard", "reward_low_FP_rate"):
        result = nab_score.score_set(
            files,
            set(subset) if subset else None,
            nab_score.PROFILES[profile],
            lambda f: f.scores,
            "subset",
            fixed=None if sweep else 0.5,
        )
        out[profile] = result["normalised"]
    return out


def margin_multiple(run: dict) -> np.ndarray:
    """A series' score as a multiple of its threshold's margin over its normal score, mapped
    into [0, 1): comparable across series, so one threshold can be swept over all of them."""
    ratio = np.maximum(run["score"] - run["normal"], 0.0) / max(run["threshold"] - run["normal"], 1e-12)
    return ratio / (1.0 + ratio)


def nab_rows(runs: dict[str, dict]) -> list[tuple[str, str, str]]:
    fmt = lambda r: f"{r['standard']:.1f} / {r['reward_low_FP_rate']:.1f}"  # noqa: E731
    rows = [
        (
            "vad, the `alarm` column at defaults (no sweep)",
            fmt(nab_result(runs, "alarm")),
            f"an episode after {AlarmRule().quiet} quiet rows, hold-off {AlarmRule().hold_off} rows",
        ),
        ("vad, `is_anomaly` as the alarm (no sweep)", fmt(nab_result(runs, "flag")), "every flagged row alarms"),
        (
            "vad, the raw score with a corpus-wide sweep",
            fmt(nab_result(runs, values=margin_multiple, sweep=True)),
            "each row above the swept threshold alarms",
        ),
    ]
    rows += [
        (f"published: {name} (swept)", f"{standard:.1f} / {low:.1f}", "") for name, (standard, low) in NAB_PUBLISHED.items()
    ]
    rows.append(("null (never fires)", "0.0 / 0.0", ""))
    return rows


def halves_rows(runs: dict[str, dict]) -> list[tuple[str, str, str]]:
    """AlarmRule chosen on one half of the series and reported on the other (standard profile):
    every (quiet, hold_off) of the grid, on the same flags."""
    names = sorted(runs)
    halves = {"A": names[0::2], "B": names[1::2]}
    table = {}
    for quiet in QUIETS:
        for hold in HOLD_OFFS:
            alarms = lambda run, quiet=quiet, hold=hold: onsets(  # noqa: E731
                run["flag"], [(0, len(run["flag"]))], hold, quiet
            )[0]
            table[quiet, hold] = {
                half: nab_result(runs, values=alarms, subset=subset)["standard"] for half, subset in halves.items()
            }
    default = (AlarmRule().quiet, AlarmRule().hold_off)
    rows = [
        (
            f"quiet {quiet}",
            "; ".join(
                f"hold-off {hold}: A {table[quiet, hold]['A']:.1f}, B {table[quiet, hold]['B']:.1f}" for hold in HOLD_OFFS
            ),
            f"the default: hold-off {default[1]}" if quiet == default[0] else "",
        )
        for quiet in QUIETS
    ]
    for chosen_on, reported_on in (("A", "B"), ("B", "A")):
        best = max(table.values(), key=lambda v: v[chosen_on])[chosen_on]
        ties = [key for key, v in table.items() if v[chosen_on] == best]
        rows.append(
            (
                f"chosen on {chosen_on}",
                f"{chosen_on} {best:.1f} at (quiet, hold-off) "
                + ", ".join(f"{key}: {reported_on} {table[key][reported_on]:.1f}" for key in ties),
                f"best on {reported_on} alone: {max(v[reported_on] for v in table.values()):.1f}",
            )
        )
    return rows


# ------------------------------------------------------------------------------------ SKAB
def skab_rows(root: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, float]]]:
    tp = fp = fn = tn = 0
    per_file, training_shares = [], []
    for name in SKAB_FILES:
        frame = pl.read_csv(DATA / "skab" / name, separator=";")
        features = frame.drop("anomaly", "changepoint")
        scored, _ = train_and_score(
            features[:SKAB_TRAIN_ROWS], features, root / "skab" / name.replace("/", "_"), "datetime", separator=";"
        )
        flags = scored["is_anomaly"].to_numpy().astype(bool)
        labels = frame["anomaly"].to_numpy().astype(bool)
        training_shares.append((f"SKAB {name}", float(flags[:SKAB_TRAIN_ROWS].mean())))
        flags, labels = flags[SKAB_TRAIN_ROWS:], labels[SKAB_TRAIN_ROWS:]
        tp, fp = tp + int((flags & labels).sum()), fp + int((flags & ~labels).sum())
        fn, tn = fn + int((~flags & labels).sum()), tn + int((~flags & ~labels).sum())
        per_file.append(f"{flags.mean():.0%}")
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    rows = [
        (
            "vad, `is_anomaly` at defaults",
            f"F1 {f1:.3f}, FAR {fp / max(fp + tn, 1):.1%}, MAR {fn / max(fn + tp, 1):.1%}",
            f"flagged per file: {' '.join(per_file)}",
        )
    ]
    rows += [(f"published: {name}", figures, "SKAB leaderboard") for name, figures in SKAB_PUBLISHED.items()]
    return rows, training_shares


def anomaly_free_rows(root: Path) -> tuple[list[tuple[str, str, str]], float]:
    stream = pl.read_csv(DATA / "skab" / "anomaly-free" / "anomaly-free.csv", separator=";")
    cut = int(0.7 * stream.height)
    scored, _ = train_and_score(stream[:cut], stream, root / "anomaly-free", "datetime", separator=";")
    flags, alarms = scored["is_anomaly"].to_numpy().astype(bool), scored["alarm"].to_numpy().astype(bool)
    tenths = " ".join(f"{part.mean():.0%}" for part in np.array_split(flags[cut:], 10))
    return [
        ("flagged in the last 30% (all normal), target 1%", f"{flags[cut:].mean():.2%}", f"per tenth: {tenths}"),
        (
            "alarms raised in the last 30%",
            f"{int(alarms[cut:].sum())} in {stream.height - cut:,} rows",
            f"quiet {AlarmRule().quiet}, hold-off {AlarmRule().hold_off} rows",
        ),
    ], float(flags[:cut].mean())


def main(write: bool = typer.Option(True, help="Write the Alarms section of BENCHMARKS.md.")) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vad-alarms-") as tmp:
        runs = nab_runs(Path(tmp))
        skab, skab_training = skab_rows(Path(tmp))
        free, free_training = anomaly_free_rows(Path(tmp))
    training = [(f"NAB {name.split('/')[-1]}", float(run["flag"][: run["train_rows"]].mean())) for name, run in runs.items()]
    training += skab_training + [("SKAB anomaly-free, first 70%", free_training)]
    shares = [share for _, share in training]
    blocks = {
        "NAB protocol, 12 series (normalised score: standard / reward low FP)": nab_rows(runs),
        "NAB: the alarm rule chosen on one half of the series, reported on the other (standard profile)": halves_rows(runs),
        f"SKAB outlier leaderboard protocol (5 files: train on the first {SKAB_TRAIN_ROWS} rows, flag the rest)": skab,
        "Anomaly-free SKAB stream (train on the first 70%, score it all)": free,
        "Flagged share of each training period (target 1%; the bar: within 2x)": [
            (
                "median / largest",
                f"{np.median(shares):.2%} / {max(shares):.2%}",
                f"{sum(s > 0.02 for s in shares)} of {len(shares)} over 2%",
            )
        ]
        + [(name, f"{share:.2%}", "") for name, share in training],
    }
    wall = time.perf_counter() - started
    print_blocks(blocks)
    if write:
        tables = markdown_blocks(blocks)
        replace_section(
            ROOT / "BENCHMARKS.md",
            "alarms",
            f"""## Alarms (issue 32)

Command: `python bench/alarms.py` ({wall / 60:.1f} min, one run, 2 cores). Every model is trained by
`vad train` and scored by `vad score` at their defaults (sensor mode), as a user runs them; NAB's
scorer is ../shared/tools/nab_score.py.

{tables}
""",
        )


if __name__ == "__main__":
    typer.run(main)
