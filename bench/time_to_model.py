"""Time to a model at the defaults, export alone, scoring at the defaults, and what each
detector's time buys (issue 19).

    python bench/time_to_model.py                    # 2,000 and 20,000 rows; 1 M rows scored
    python bench/speed.py                            # the same in its "defaults" lines, with 100,000 rows
    python bench/time_to_model.py --rows 100000      # add a size
    python bench/time_to_model.py --score-rows 0     # no scoring block

One run, one machine, side by side: for each size, `vad train` from the command line (interpreter
start, reading, training to early stopping, threshold, export with its checks, all included)
against PyOD's `VAE().fit` and `IForest().fit` on the same rows, each at its own defaults (each
warmed up by one untimed fit; up to 20,000 rows the median of --rounds alternating rounds), and
the ROC-AUC each then gets on held-out rows with 2% injected anomalies, so that speed is never
bought with quality. Then the export alone (`VAEDetector.export`: four graphs written, checked by
onnx, and parity-tested against PyTorch in onnxruntime) with each torch exporter, alternating,
best of --repeats. Then the models of the largest size score the same `--score-rows` rows (2%
injected anomalies) end to end: ours from the command line (`vad score`, Parquet to Parquet,
interpreter start included) and in process (`score_files`, with and without the drift
measurement every batch now gets), PyOD's VAE and IForest in process (`decision_function`
on the rows in memory, reading the file included), each with its ROC-AUC; all but PyOD's VAE
in --rounds alternating rounds, each ratio the median of the rounds' ratios. Data: 8 latent
factors mixed into 32 columns, half of them made skewed.
"""

from __future__ import annotations

import subprocess
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


from pipeline.runtime import Scorer  # noqa: E402
from pipeline.training import export  # noqa: E402
from pipeline.training.detector import VAEDetector  # noqa: E402

FEATURES = 32
ROUNDS_UP_TO = 20_000  # sizes whose time to a model is measured in alternating rounds (PyOD's VAE fit ≤ 1 min)


def rows_with_anomalies(rows: int, seed: int, share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Correlated rows, the second half of the columns exponentiated (skewed); with `share`, that
    many rows get 4 columns pushed 3 sd off the factors' plane (labels returned)."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).standard_normal((8, FEATURES))  # the same source for every call
    x = rng.standard_normal((rows, 8)) @ mixing + 0.3 * rng.standard_normal((rows, FEATURES))
    y = np.zeros(rows, dtype=int)
    anomalous = rng.choice(rows, int(rows * share), replace=False)
    y[anomalous] = 1
    push = 3.0 * x.std(axis=0)[:4].mean()  # once: per row it made 1 M rows take minutes
    for row in anomalous:
        x[row, rng.choice(FEATURES, 4, replace=False)] += push * rng.choice([-1, 1], 4)
    x[:, FEATURES // 2 :] = np.exp(x[:, FEATURES // 2 :] / 3.0)
    return x.astype(np.float32), y


def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = action()
    return time.perf_counter() - start, value


def cli_time_to_model(x: np.ndarray, folder: Path) -> tuple[float, Path]:
    """Seconds of `vad train` on a Parquet file of `x`, from process start to its exit."""
    path = folder / "train.parquet"
    pl.DataFrame(x, schema=[f"f{i}" for i in range(FEATURES)]).write_parquet(path)
    command = [
        str(Path(sys.executable).with_name("vad")),
        "train",
        str(path),
        "--name",
        "ttm",
        "--out",
        str(folder / "models"),
        "--no-progress",
    ]
    seconds, _ = timed(lambda: subprocess.run(command, check=True, capture_output=True, cwd=ROOT))
    return seconds, folder / "models" / "ttm"  # the model folder: Scorer.load follows its `latest`


def scoring_block(
    version: Path, vae: object, forest: object, rows: int, folder: Path, rounds: int = 3
) -> list[tuple[str, str, str]]:
    """Default scoring of `rows` rows, end to end, ours (CLI and in process) against PyOD's.
    Ours and IForest, a few seconds each, run in `rounds` alternating rounds and each ratio is
    the median of its rounds' ratios: one timing of 1.5 s moved by 1.1× between runs here
    (drift's cost read +3% and +16%). PyOD's VAE, ten times slower, is timed once."""
    from pipeline.runtime import score_files

    x, y = rows_with_anomalies(rows, seed=7, share=0.02)
    source = folder / "score.parquet"
    pl.DataFrame(x, schema=[f"f{i}" for i in range(FEATURES)]).write_parquet(source)
    scorer = Scorer.load(version)
    no_drift = Scorer.load(version)
    no_drift.manifest = no_drift.manifest.model_copy(update={"drift": None})
    vad = str(Path(sys.executable).with_name("vad"))

    def pyod(model: object) -> np.ndarray:
        return model.decision_function(pl.read_parquet(source).to_numpy())  # type: ignore[attr-defined]

    runs: dict[str, Callable[[], object]] = {
        "cli": lambda: subprocess.run(
            [vad, "score", str(version), str(source), "--output", str(folder / "cli.parquet"), "--show", "0"],
            check=True,
            capture_output=True,
            cwd=ROOT,
        ),
        "ours": lambda: score_files(scorer, source, folder / "lib.parquet"),
        "bare": lambda: score_files(no_drift, source, folder / "bare.parquet"),
        "forest": lambda: pyod(forest),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            taken, value = timed(run)
            seconds[name].append(taken)
    forest_scores = value  # the last run of the round is IForest's
    vae_s, vae_scores = timed(lambda: pyod(vae))
    ours_auc = roc_auc_score(y, pl.read_parquet(folder / "lib.parquet")["score"].to_numpy())
    median = lambda values: float(np.median(values))  # noqa: E731
    ratio = lambda a, b: median([p / q for p, q in zip(seconds[a], seconds[b], strict=True)])  # noqa: E731
    forest_rounds = ", ".join(
        f"{f / o:.2f}"
        for f, o in sorted(zip(seconds["forest"], seconds["ours"], strict=True), key=lambda pair: pair[0] / pair[1])
    )
    cli_s, ours_s, bare_s, forest_s = (median(seconds[name]) for name in runs)
    rate = lambda taken: f"{rows / taken / 1e3:,.0f} k rows/s"  # noqa: E731
    of = f"median of {rounds}: " if rounds > 1 else ""
    return [
        (
            f"score {rows:,} rows: `vad score` (CLI, Parquet → Parquet, start-up included)",
            f"{of}{cli_s:.1f} s, {rate(cli_s)}",
            f"{ratio('ours', 'cli'):.2f} of the in-process rate; {vae_s / cli_s:.1f}× PyOD VAE, "
            f"{ratio('forest', 'cli'):.2f}× IForest",
        ),
        (
            f"score {rows:,} rows: `score_files` in process (defaults, drift measured)",
            f"{of}{ours_s:.1f} s, {rate(ours_s)}",
            f"{vae_s / ours_s:.1f}× PyOD VAE, {ratio('forest', 'ours'):.2f}× IForest (rounds {forest_rounds}); "
            f"ROC-AUC {ours_auc:.3f}",
        ),
        (
            f"score {rows:,} rows: the same without the drift measurement",
            f"{of}{bare_s:.1f} s, {rate(bare_s)}",
            f"drift costs {ratio('ours', 'bare') - 1:+.0%}; {ratio('forest', 'bare'):.2f}× IForest",
        ),
        (
            f"score {rows:,} rows: PyOD `VAE.decision_function`",
            f"{vae_s:.1f} s, {rate(vae_s)}",
            f"ROC-AUC {roc_auc_score(y, vae_scores):.3f}",
        ),
        (
            f"score {rows:,} rows: PyOD `IForest.decision_function`",
            f"{of}{forest_s:.1f} s, {rate(forest_s)}",
            f"ROC-AUC {roc_auc_score(y, forest_scores):.3f}",
        ),
    ]


def measure(
    rows: list[int], repeats: int, score_rows: int, folder: Path, rounds: int = 3
) -> tuple[list[tuple[str, str, str]], Path | None, Path | None]:
    """The table's lines, the largest size's model and the file it scored (both kept in
    `folder`, so a caller can measure more on them: bench/speed.py's re-based ratios)."""
    from pyod.models.iforest import IForest
    from pyod.models.vae import VAE

    # One untimed fit of each first: the first `vad train` after an install compiles bytecode
    # and fills the OS's file cache (torch's libraries), and PyOD's first fit in a process
    # imports torch._dynamo (torch.optim's first use, 1.3 s); a user pays each once, not per model.
    (folder / "warm-up").mkdir(parents=True)
    warm_x = rows_with_anomalies(200, seed=2)[0]
    cli_time_to_model(warm_x, folder / "warm-up")
    VAE(random_state=0, verbose=0).fit(warm_x)
    x_test, y_test = rows_with_anomalies(20_000, seed=99, share=0.02)
    test_frame = pl.DataFrame(x_test, schema=[f"f{i}" for i in range(FEATURES)])
    lines: list[tuple[str, str, str]] = []
    largest = scored = None
    for n in rows:
        x, _ = rows_with_anomalies(n, seed=1)
        ours_s, vae_s, forest_s = [], [], []
        # Alternating rounds where a round is short: on a shared machine one fit of a few
        # seconds moves by 1.5× between runs (bench/NOTES.md), the median of three far less.
        for round_ in range(rounds if n <= ROUNDS_UP_TO else 1):
            size_folder = folder / f"rows-{n}-{round_}"
            size_folder.mkdir(parents=True)
            seconds, version = cli_time_to_model(x, size_folder)
            ours_s.append(seconds)
            seconds, vae = timed(lambda: VAE(random_state=0, verbose=0).fit(x))
            vae_s.append(seconds)
            seconds, forest = timed(lambda: IForest(random_state=0).fit(x))
            forest_s.append(seconds)
        ours_auc = roc_auc_score(y_test, Scorer.load(version).score(test_frame)["score"].to_numpy())
        vae_auc = roc_auc_score(y_test, vae.decision_function(x_test))
        forest_auc = roc_auc_score(y_test, forest.decision_function(x_test))
        ratios = sorted(o / v for o, v in zip(ours_s, vae_s, strict=True))
        spread = f" (rounds {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""
        median = lambda values: float(np.median(values))  # noqa: E731
        of = f"median of {len(ours_s)}: " if len(ours_s) > 1 else ""
        lines += [
            (
                f"{n:,} rows: `vad train` (CLI, defaults, export included)",
                f"{of}{median(ours_s):.1f} s",
                f"{median(ratios):.2f}× PyOD VAE's time{spread}; ROC-AUC {ours_auc:.3f}",
            ),
            (f"{n:,} rows: PyOD `VAE().fit`", f"{of}{median(vae_s):.1f} s", f"ROC-AUC {vae_auc:.3f}"),
            (f"{n:,} rows: PyOD `IForest().fit`", f"{of}{median(forest_s):.1f} s", f"ROC-AUC {forest_auc:.3f}"),
        ]
        print(*lines[-3:], sep="\n", flush=True)
        if n == max(rows):
            largest = version
            if score_rows:
                lines += scoring_block(version, vae, forest, score_rows, size_folder, rounds)
                scored = size_folder / "score.parquet"
                print(*lines[-5:], sep="\n", flush=True)
    detector = VAEDetector(random_state=0).fit(rows_with_anomalies(20_000, seed=1)[0])
    best = {"torchscript": np.inf, "dynamo": np.inf}
    for round_ in range(repeats):
        for exporter in best:  # alternating, so drift on a shared machine hits both alike
            export.EXPORTER = exporter
            seconds, _ = timed(lambda: detector.export(folder / "export", f"e{round_}{exporter}"))
            best[exporter] = min(best[exporter], seconds)
    export.EXPORTER = "torchscript"
    lines += [
        (
            "export alone, 4 graphs checked and parity-tested: TorchScript exporter (the default)",
            f"{best['torchscript']:.2f} s",
            f"{best['dynamo'] / best['torchscript']:.1f}× faster than dynamo",
        ),
        ("export alone, the same: dynamo exporter", f"{best['dynamo']:.2f} s", "torch.export, the exporter before"),
    ]
    return lines, largest, scored


def main(
    rows: list[int] = typer.Option([2_000, 20_000], help="Training sizes."),
    repeats: int = 3,
    rounds: int = typer.Option(
        3, help="Alternating rounds of each fit (sizes up to 20,000 rows) and of the scoring, ours against IForest."
    ),
    score_rows: int = typer.Option(1_000_000, help="Rows scored by the largest size's models (0: none)."),
) -> None:
    """Print the lines; the figures of record are bench/speed.py's "defaults" lines, measured
    there in the same run as its other peers."""
    with tempfile.TemporaryDirectory(prefix="vad-ttm-") as tmp:
        lines, _, _ = measure(rows, repeats, score_rows, Path(tmp), rounds)
    print("\n".join(f"| {a} | {b} | {c} |" for a, b, c in lines))


if __name__ == "__main__":
    typer.run(main)
