"""Detection quality against peers on real labelled data, measured side by side in one run.

ADBench protocol: stratified 70/30 split per seed, fit without labels on the 70% (capped at
--max-train-rows for every detector alike), ROC-AUC and average precision on the 30%.
SKAB: train on anomaly-free.csv, score valve1/0.csv per time step (window 10, the window
ending at each step); ROC-AUC, AP and best F1 without point adjustment.

    python bench/quality.py                 # writes the table into BENCHMARKS.md
    python bench/quality.py --seeds 0 1 2   # several seeds, scores averaged per cell
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl
import typer
from rich.console import Console
from sections import replace_section
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.model_selection import train_test_split

from pipeline.build.detector import VAEDetector
from pipeline.build.fit import fit_model
from pipeline.core.config import DataConfig, PipelineConfig, TrainConfig, WindowSpec
from pipeline.data.schema import make_windows
from pipeline.runtime import Scorer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ADBENCH = ["6_cardio", "7_Cardiotocography", "10_cover", "12_fault", "17_InternetAds", "22_magic.gamma",
           "25_musk", "32_shuttle"]
SKAB_SENSORS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple",
                "Voltage", "Volume Flow RateRMS"]
SKAB_WINDOW = 10
OURS = "vad (this project)"
console = Console()


def peers(seed: int) -> dict[str, Callable[[], object]]:
    """PyOD detectors at their defaults, seeded where they take a seed."""
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.copod import COPOD
    from pyod.models.ecod import ECOD
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.pca import PCA
    from pyod.models.vae import VAE

    return {
        "PyOD VAE": lambda: VAE(random_state=seed, verbose=0),
        "PyOD AutoEncoder": lambda: AutoEncoder(random_state=seed, verbose=0),
        "PyOD IForest": lambda: IForest(random_state=seed),
        "PyOD ECOD": lambda: ECOD(),
        "PyOD COPOD": lambda: COPOD(),
        "PyOD PCA": lambda: PCA(random_state=seed),
        "PyOD KNN": lambda: KNN(),
    }


OPTIONS: dict = {"with_peers": True, "ours": {}}  # set once by main(): global, never per data set


def score_all(x_train: np.ndarray, x_test: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Anomaly scores (higher = more anomalous) of every detector on the test rows."""
    scores = {OURS: VAEDetector(random_state=seed, **OPTIONS["ours"]).fit(x_train).anomaly_score(x_test)}
    for name, make in (peers(seed) if OPTIONS["with_peers"] else {}).items():
        detector = make()
        detector.fit(x_train)
        scores[name] = detector.decision_function(x_test)  # PyOD: higher = more abnormal
    return scores


def adbench(name: str, seed: int, max_train_rows: int) -> dict[str, dict[str, float]]:
    data = np.load(DATA / "adbench" / f"{name}.npz")
    x, y = data["X"].astype(np.float64), data["y"].astype(int)  # PyOD PCA overflows on float32
    x_train, x_test, _, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    if len(x_train) > max_train_rows:
        x_train = x_train[np.random.default_rng(seed).choice(len(x_train), max_train_rows, replace=False)]
    return {k: metrics(y_test, s) for k, s in score_all(x_train, x_test, seed).items()}


def skab(seed: int) -> dict[str, dict[str, float]]:
    """Ours runs through the full pipeline (fit_model + ONNX Scorer); peers see the same windows."""
    normal = pl.read_csv(DATA / "skab" / "anomaly-free" / "anomaly-free.csv", separator=";", try_parse_dates=True)
    test = pl.read_csv(DATA / "skab" / "valve1" / "0.csv", separator=";", try_parse_dates=True)
    window = WindowSpec(length=SKAB_WINDOW)
    config = PipelineConfig(name="skab", data=DataConfig(mode="sensor", time_column="datetime", features=SKAB_SENSORS,
                                                         window=window), train=TrainConfig(seed=seed, progress=False))
    overrides = OPTIONS["ours"]
    config = config.model_copy(update={
        "model": config.model.model_copy(update={k: v for k, v in overrides.items() if k in type(config.model).model_fields}),
        "train": config.train.model_copy(update={k: v for k, v in overrides.items() if k in TrainConfig.model_fields}),
    })
    with tempfile.TemporaryDirectory() as root:
        scorer = Scorer.load(fit_model(DATA / "skab" / "anomaly-free" / "anomaly-free.csv", config, root).version_dir)
        ours = scorer.score(test)["score"].to_numpy()  # one row per time step, in time order
    windows = {name: make_windows(frame.sort("datetime").select(SKAB_SENSORS).to_numpy().astype(np.float32),
                                  [(0, frame.height)], window, pad=True)[0] for name, frame in [("train", normal), ("test", test)]}
    y = test.sort("datetime")["anomaly"].to_numpy()
    results = {OURS: metrics(y, ours)}
    for name, make in (peers(seed) if OPTIONS["with_peers"] else {}).items():
        detector = make()
        detector.fit(windows["train"].astype(np.float64))
        results[name] = metrics(y, detector.decision_function(windows["test"].astype(np.float64)))
    return results


def metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC-AUC, AP and best F1. Non-finite scores (PyOD's PCA divides by ~0 explained variance
    on collinear sets) go to the ends of the finite range: +inf on top, NaN and −inf at the
    bottom; how many is reported as `non_finite`."""
    scores = np.asarray(scores, dtype=np.float64)
    bad = ~np.isfinite(scores)
    if bad.any():
        finite = scores[~bad]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        scores = np.where(np.isposinf(scores), high + 1.0, np.where(bad, low - 1.0, scores))
    precision, recall, _ = precision_recall_curve(y, scores)
    f1 = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12))
    return {"roc_auc": roc_auc_score(y, scores), "ap": average_precision_score(y, scores), "f1": float(f1),
            "non_finite": int(bad.sum())}


def main(
    seeds: list[int] = typer.Option([0], help="Seeds (split and detectors); cells are averaged over them."),
    max_train_rows: int = typer.Option(10_000, help="Training-row cap, the same for every detector."),
    datasets: list[str] = typer.Option(ADBENCH + ["skab"], help="Data sets to run."),
    write: bool = typer.Option(True, help="Write the table into BENCHMARKS.md."),
    with_peers: bool = typer.Option(True, "--peers/--no-peers", help="Run the PyOD peers too."),
    set_: list[str] = typer.Option([], "--set", help="Option of ours for every data set, e.g. beta=1.0 (JSON value)."),
) -> None:
    OPTIONS["with_peers"] = with_peers
    OPTIONS["ours"] = {k: json.loads(v) for k, v in (item.split("=", 1) for item in set_)}
    write = write and with_peers and not set_  # BENCHMARKS.md only gets full runs of the defaults
    started = time.perf_counter()
    rows: list[dict] = []
    for dataset in datasets:
        for seed in seeds:
            t0 = time.perf_counter()
            result = skab(seed) if dataset == "skab" else adbench(dataset, seed, max_train_rows)
            rows += [{"dataset": dataset, "seed": seed, "detector": k, **v} for k, v in result.items()]
            best_peer = max((v["roc_auc"] for k, v in result.items() if k != OURS), default=float("nan"))
            console.print(f"{dataset} seed {seed}: ours {result[OURS]['roc_auc']:.3f}, best peer {best_peer:.3f} "
                          f"({time.perf_counter() - t0:.0f} s)")
    frame = pl.DataFrame(rows).group_by("dataset", "detector", maintain_order=True).agg(
        pl.col("roc_auc", "ap", "f1").mean(), pl.col("non_finite").sum())
    report = render(frame, seeds, max_train_rows, time.perf_counter() - started)
    console.print(report)
    if write:
        write_section(report)


def render(frame: pl.DataFrame, seeds: list[int], cap: int, seconds: float) -> str:
    """Markdown: per-data-set ROC-AUC table, then mean ROC-AUC, mean AP and average rank."""
    adb = frame.filter(pl.col("dataset") != "skab")
    ranked = adb.with_columns(rank=pl.col("roc_auc").rank(descending=True).over("dataset"))
    summary = ranked.group_by("detector", maintain_order=True).agg(
        pl.col("roc_auc").mean().alias("mean ROC-AUC"), pl.col("ap").mean().alias("mean AP"),
        pl.col("rank").mean().alias("average rank")).sort("average rank")
    wide = frame.pivot(on="dataset", index="detector", values="roc_auc")
    lines = [
        "Command: `python bench/quality.py" + (f" --seeds {' --seeds '.join(map(str, seeds))}" if seeds != [0] else "")
        + "`", "",
        f"Seeds {seeds}; training rows capped at {cap:,} for every detector; wall time {seconds / 60:.1f} min; "
        f"Python {platform.python_version()}, torch {metadata.version('torch')}, "
        + (f"pyod {metadata.version('pyod')}, " if _has('pyod') else "")
        + f"onnxruntime {metadata.version('onnxruntime-gpu') if _has('onnxruntime-gpu') else metadata.version('onnxruntime')}.",
        "", "ROC-AUC per data set (SKAB: valve1/0 per time step):", "",
        "| detector | " + " | ".join(wide.columns[1:]) + " |", "|---|" + "---:|" * (wide.width - 1),
    ]
    lines += ["| " + " | ".join([r[0]] + [f"{v:.3f}" for v in r[1:]]) + " |" for r in wide.iter_rows()]
    lines += ["", f"ADBench summary ({adb['dataset'].n_unique()} sets):", "", "| detector | mean ROC-AUC | mean AP | average rank |", "|---|---:|---:|---:|"]
    lines += [f"| {d} | {a:.3f} | {p:.3f} | {r:.2f} |" for d, a, p, r in summary.iter_rows()]
    broken = frame.filter(pl.col("non_finite") > 0)
    if broken.height:
        lines += ["", "Non-finite scores replaced (see `metrics`): " + ", ".join(
            f"{r['detector']} on {r['dataset']}: {r['non_finite']}" for r in broken.iter_rows(named=True)) + "."]
    skab_rows = frame.filter(pl.col("dataset") == "skab")
    if skab_rows.height:
        lines += ["", "SKAB valve1/0:", "", "| detector | ROC-AUC | AP | best F1 |", "|---|---:|---:|---:|"]
        lines += [f"| {r['detector']} | {r['roc_auc']:.3f} | {r['ap']:.3f} | {r['f1']:.3f} |"
                  for r in skab_rows.sort("roc_auc", descending=True).iter_rows(named=True)]
    return "\n".join(lines) + "\n"


def _has(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def write_section(report: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace the quality section of BENCHMARKS.md (between its markers), keeping the rest."""
    replace_section(path, "quality", f"## Detection quality\n\n{report}")


if __name__ == "__main__":
    typer.run(main)
