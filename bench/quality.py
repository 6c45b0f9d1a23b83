"""Detection quality against peers on real labelled data, measured side by side in one run.

Three suites from ../shared/data (its MANIFEST.md states each protocol):
- ADBench, 24 sets: stratified 70/30 split per seed, fit without labels on the 70% (capped at
  --max-train-rows for every detector alike), ROC-AUC and average precision on the 30%.
- SKAB, 5 labelled files: train on anomaly-free.csv, score each file per time step (window 10,
  the window ending at each step).
- NAB, 12 univariate series: train on the first 15% of each, score every later step (window 32).
- Telemetry, 18 NASA MSL/SMAP files as TSB-AD evaluates them (../shared/data/tsbad/README.md):
  `vad train --mode sensor --time-column t` on the first `tr` rows, `vad score` on the whole file,
  both from the command line as a user runs them, and VUS-PR by TSB-AD's own metric (bench/vus.py,
  in an environment of its own built on first use); the published methods' VUS-PR beside it.

Ours runs through the product path wherever the protocol allows: for the seeds in --onnx-seeds,
ADBench models are exported and scored by the ONNX `Scorer` (other seeds score in torch, which
the export's parity gate ties to it); SKAB and NAB always go `fit_model` → export → `Scorer`. A
set the product refuses (an export that fails, a series with a repeated timestamp) is reported
as failed, never repaired here. PyOD peers see the same rows (the same windows on series); their
results are cached in bench/.cache (keyed by set, seed, cap and PyOD version), so a run that
changes only our options re-runs only ours. Every run's cells go to bench/.cache/runs/LABEL.json,
which bench/halves.py reads for the half-and-half model-selection table.

    python bench/quality.py                         # every suite, seed 0, writes BENCHMARKS.md
    python bench/quality.py --seeds 0 --seeds 1 --seeds 2
    python bench/quality.py --no-peers --label beta4 --set beta=4.0   # a candidate setting
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
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

from pipeline.core.config import DataConfig, ModelConfig, PipelineConfig, TrainConfig, WindowSpec
from pipeline.data.windows import make_windows
from pipeline.runtime import Scorer
from pipeline.training.detector import VAEDetector
from pipeline.training.fit import fit_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "bench" / ".cache"
ADBENCH = sorted((p.stem for p in (DATA / "adbench").glob("*.npz")), key=lambda s: int(s.split("_")[0]))
# The two fixed halves of the model-selection protocol (bench/halves.py): every other set in
# the manifest's numeric order, so each half mixes sizes, widths and domains. Never re-drawn.
HALF_A = ADBENCH[0::2]
HALF_B = ADBENCH[1::2]
SKAB_FILES = ["valve1/0", "valve2/0", "valve2/1", "valve2/2", "valve2/3"]
SKAB_SENSORS = [
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
]
SKAB_WINDOW = 10
NAB_WINDOW, NAB_TRAIN_SHARE = 32, 0.15
TSBAD = DATA / "tsbad"
# TSB-AD's metric needs numpy < 2 and nothing of its torch stack (../shared/data/tsbad/README.md).
METRIC_ENV = CACHE / "tsbad-env"
METRIC_PACKAGES = ["numpy<2", "scikit-learn", "scipy", "statsmodels", "pandas"]
OURS = "vad (this project)"
HEADLINE = {"telemetry": "vus_pr"}  # each suite's ranking metric; ROC-AUC where not named
console = Console(width=200)


def nab_series() -> list[str]:
    return list(json.loads((DATA / "nab" / "combined_windows.json").read_text()))


def telemetry_files() -> list[str]:
    return sorted(p.stem for p in (TSBAD / "M").glob("*.parquet"))


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


OPTIONS: dict = {"with_peers": True, "ours": {}, "scoring": {}, "onnx_seeds": [0], "cap": 20_000}  # set once by main()
PEER_RUNS = {"fitted": 0, "cached": 0}  # how this run got its peers' cells (the wall time depends on it)


# ---------------------------------------------------------------- peers, cached


def _peer_cache() -> dict:
    path = CACHE / "peers.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_peers(key: str, seed: int, x_train: np.ndarray, tests: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """{test name: {peer: metrics}}; fitted once on `x_train`, read from the cache when there."""
    if not OPTIONS["with_peers"]:
        return {name: {} for name in tests}
    cache, full_key = _peer_cache(), f"{key}|seed {seed}|cap {OPTIONS['cap']}|pyod {metadata.version('pyod')}"
    PEER_RUNS["cached" if full_key in cache else "fitted"] += 1
    if full_key not in cache:
        found: dict[str, dict] = {name: {} for name in tests}
        for peer, make in peers(seed).items():
            detector = make()
            detector.fit(x_train.astype(np.float64))  # PyOD PCA overflows on float32
            for name, (x_test, y) in tests.items():
                found[name][peer] = metrics(y, detector.decision_function(x_test.astype(np.float64)))
        cache[full_key] = found
        CACHE.mkdir(parents=True, exist_ok=True)
        (CACHE / "peers.json").write_text(json.dumps(cache))
    return cache[full_key]


# ---------------------------------------------------------------- ours, through the product


def _ours_config(name: str, seed: int, data: DataConfig) -> PipelineConfig:
    """The defaults, with --set options applied where ModelConfig or TrainConfig has the field."""
    overrides = OPTIONS["ours"]
    return PipelineConfig(
        name=name,
        data=data,
        model=ModelConfig(**{k: v for k, v in overrides.items() if k in ModelConfig.model_fields}),
        train=TrainConfig(
            seed=seed, progress=False, **{k: v for k, v in overrides.items() if k in TrainConfig.model_fields}
        ),
    )


def _failure(error: BaseException) -> dict[str, str]:
    last = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" ({Path(last.filename).name}:{last.lineno})" if last else ""
    return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}{where}"}


def adbench(name: str, seed: int) -> dict[str, dict]:
    data = np.load(DATA / "adbench" / f"{name}.npz")
    x, y = data["X"].astype(np.float64), data["y"].astype(int)
    x_train, x_test, _, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    if len(x_train) > OPTIONS["cap"]:
        x_train = x_train[np.random.default_rng(seed).choice(len(x_train), OPTIONS["cap"], replace=False)]
    result = run_peers(f"adbench {name}", seed, x_train, {name: (x_test, y_test)})[name]
    try:
        detector = VAEDetector(random_state=seed, **OPTIONS["ours"]).fit(x_train)
        if seed in OPTIONS["onnx_seeds"]:
            with tempfile.TemporaryDirectory() as root:
                scorer = Scorer.load(detector.export(root, name="quality"))
                frame = pl.DataFrame(x_test.astype(np.float32), schema=[f"x{i}" for i in range(x.shape[1])])
                scores = scorer.score(frame, **OPTIONS["scoring"])["score"].to_numpy()
        elif OPTIONS["scoring"]:
            raise ValueError("--score options need the ONNX scorer: list this seed in --onnx-seeds")
        else:
            scores = detector.anomaly_score(x_test)
        result = {OURS: metrics(y_test, scores), **result}
    except Exception as error:  # noqa: BLE001 - a failed cell is a result of the bench, reported as such
        result = {OURS: _failure(error), **result}
    return result


def _series_scores(
    train: pl.DataFrame, test_frames: dict[str, pl.DataFrame], config: PipelineConfig
) -> dict[str, np.ndarray]:
    """fit_model on `train` (written to Parquet, as a user's file), export, then score each test
    frame with the ONNX Scorer: one score per row, in time order."""
    with tempfile.TemporaryDirectory() as root:
        train.write_parquet(Path(root) / "train.parquet")
        scorer = Scorer.load(fit_model(Path(root) / "train.parquet", config, Path(root) / "models").version_dir)
        return {name: scorer.score(frame, **OPTIONS["scoring"])["score"].to_numpy() for name, frame in test_frames.items()}


def skab(seed: int) -> dict[str, dict[str, dict]]:
    """{file: {detector: metrics}}; one model per seed, trained on the anomaly-free stream."""
    read = lambda path: pl.read_csv(path, separator=";", try_parse_dates=True).sort("datetime")  # noqa: E731
    normal = read(DATA / "skab" / "anomaly-free" / "anomaly-free.csv")
    tests = {name: read(DATA / "skab" / f"{name}.csv") for name in SKAB_FILES}
    window = WindowSpec(length=SKAB_WINDOW)

    def windows(frame: pl.DataFrame) -> np.ndarray:
        return make_windows(frame.select(SKAB_SENSORS).to_numpy().astype(np.float32), [(0, frame.height)], window, pad=True)[
            0
        ]

    labels = {name: frame["anomaly"].to_numpy() for name, frame in tests.items()}
    results = run_peers("skab", seed, windows(normal), {n: (windows(f), labels[n]) for n, f in tests.items()})
    data = DataConfig(mode="sensor", time_column="datetime", features=SKAB_SENSORS, window=window)
    try:
        ours = _series_scores(normal.select("datetime", *SKAB_SENSORS), tests, _ours_config("skab", seed, data))
        for name in SKAB_FILES:
            results[name] = {OURS: metrics(labels[name], ours[name]), **results[name]}
    except Exception as error:  # noqa: BLE001 - reported as a failed cell
        for name in SKAB_FILES:
            results[name] = {OURS: _failure(error), **results[name]}
    return results


def nab(series: str, seed: int) -> dict[str, dict]:
    """Train on the first 15% (unlabelled), score every later step on the window ending there."""
    frame = pl.read_csv(DATA / "nab" / series, try_parse_dates=True)
    spans = json.loads((DATA / "nab" / "combined_windows.json").read_text())[series]
    times = frame["timestamp"]
    y = np.zeros(frame.height, dtype=int)
    for start, end in (
        pl.DataFrame(spans, schema={"start": pl.String, "end": pl.String}, orient="row")
        .select(pl.all().str.to_datetime())
        .rows()
    ):
        y |= times.is_between(start, end).to_numpy()
    cut = int(frame.height * NAB_TRAIN_SHARE)
    window = WindowSpec(length=NAB_WINDOW)
    # Peers: the windows of the file's own row order (the product sorts by time; NAB files are sorted).
    all_windows = make_windows(frame.select("value").to_numpy().astype(np.float32), [(0, frame.height)], window, pad=True)[0]
    result = run_peers(f"nab {series}", seed, all_windows[:cut], {series: (all_windows[cut:], y[cut:])})[series]
    data = DataConfig(mode="sensor", time_column="timestamp", features=["value"], window=window)
    try:
        scores = _series_scores(frame[:cut], {series: frame}, _ours_config("nab", seed, data))[series]
        result = {OURS: metrics(y[cut:], scores[cut:]), **result}
    except Exception as error:  # noqa: BLE001 - reported as a failed cell (e.g. a repeated timestamp)
        result = {OURS: _failure(error), **result}
    return result


def telemetry(name: str, seed: int) -> dict[str, dict]:
    """Train as a user does on the first `tr` rows, score every row, all from the command line;
    VUS-PR by TSB-AD's metric. The published methods' VUS-PR on the file stand beside it."""
    frame = pl.read_parquet(TSBAD / "M" / f"{name}.parquet")
    train_rows = int(name.split("_tr_")[1].split("_")[0])
    published = pl.read_csv(TSBAD / "published_vus_pr.csv").filter(pl.col("file") == f"{name}.csv")
    result = {method: {"vus_pr": value} for method, value in published.select("method", "vus_pr").iter_rows()}
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        frame.drop("label").head(train_rows).write_parquet(root / "train.parquet")
        frame.drop("label").write_parquet(root / "whole.parquet")
        try:
            _vad("train", root / "train.parquet", "--mode", "sensor", "--time-column", "t", "--name", "tel", "--seed", seed)
            _vad("score", root / "models" / "tel", root / "whole.parquet", "--output", root / "scores.parquet")
            scored = frame.select("t", "label", "x0").join(
                pl.read_parquet(root / "scores.parquet").select("t", "score"), on="t", how="left"
            )
            np.savez(root / "scores.npz", **{c: scored[c].to_numpy() for c in ("score", "label", "x0")})
            found = json.loads(_run([str(metric_python()), str(ROOT / "bench" / "vus.py"), str(root / "scores.npz")]))
            ours = {"vus_pr": found["VUS-PR"], "ap": found["AUC-PR"], "roc_auc": found["AUC-ROC"]}
        except Exception as error:  # noqa: BLE001 - reported as a failed cell
            ours = _failure(error)
    return {OURS: ours, **result}


def _vad(command: str, *args: object) -> None:
    """One `vad` command as a user types it; --set options go through a config file."""
    root = Path(str(args[0])).parent
    extra = ["--out", str(root / "models"), "--no-progress"] if command == "train" else []
    if command == "train" and OPTIONS["ours"]:
        sections = {"model": ModelConfig.model_fields, "train": TrainConfig.model_fields}
        (root / "config.toml").write_text(
            "".join(
                f"[{section}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in OPTIONS["ours"].items() if k in fields)
                for section, fields in sections.items()
            )
        )
        extra += ["--config", str(root / "config.toml")]
    _run([sys.executable, "-m", "pipeline.cli", command, *map(str, args), *extra, "--json"])


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(Path(c).name for c in command[1:4])} failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def metric_python() -> Path:
    """The metric environment's interpreter, built on first use (a minute, from the registry)."""
    python = METRIC_ENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(METRIC_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *METRIC_PACKAGES], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "tsb-ad==1.5"], check=True)
    return python


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
    return {
        "roc_auc": float(roc_auc_score(y, scores)),
        "ap": float(average_precision_score(y, scores)),
        "f1": float(f1),
        "non_finite": int(bad.sum()),
    }


# ---------------------------------------------------------------- the run and its tables


def main(
    seeds: list[int] = typer.Option([0], help="Seeds (split and detectors); cells are averaged over them."),
    max_train_rows: int = typer.Option(20_000, help="Training-row cap, the same for every detector."),
    suites: list[str] = typer.Option(["adbench", "skab", "nab", "telemetry"], help="Suites to run."),
    only: list[str] = typer.Option([], help="Run only these ADBench sets or NAB series (names as in the tables)."),
    onnx_seeds: list[int] = typer.Option([0], help="Seeds whose ADBench models are exported and scored by ONNX."),
    write: bool = typer.Option(True, help="Write the tables into BENCHMARKS.md (full default runs only)."),
    with_peers: bool = typer.Option(True, "--peers/--no-peers", help="Run (or read cached) PyOD peers too."),
    label: str = typer.Option("default", help="Name of this run's cells in bench/.cache/runs (for bench/halves.py)."),
    set_: list[str] = typer.Option([], "--set", help="Option of ours for every data set, e.g. beta=4.0 (JSON value)."),
    score: list[str] = typer.Option([], help='Scoring option of ours (ScoreOptions), e.g. estimator="iwae" (JSON value).'),
    from_cache: bool = typer.Option(False, help="Only render (and write) the run saved under --label again."),
) -> None:
    if from_cache:
        run = json.loads((CACHE / "runs" / f"{label}.json").read_text())
        suites = list(dict.fromkeys(c["suite"] for c in run["cells"]))
        write = write and not run["options"] and not run["scoring"] and label == "default"
        publish(run["cells"], run["seeds"], suites, run["seconds"], write, max_train_rows, onnx_seeds)
        return
    OPTIONS.update(
        with_peers=with_peers, onnx_seeds=onnx_seeds, cap=max_train_rows, ours=_pairs(set_), scoring=_pairs(score)
    )
    write = write and with_peers and not set_ and not score and not only and label == "default"
    started = time.perf_counter()
    cells: list[dict] = []

    def record(suite: str, dataset: str, seed: int, result: dict[str, dict], seconds: float) -> None:
        for detector, values in result.items():
            cells.append({"suite": suite, "dataset": dataset, "seed": seed, "detector": detector, **values})
        key = HEADLINE.get(suite, "roc_auc")
        ours = result[OURS].get(key)
        best = max((v[key] for k, v in result.items() if k != OURS and key in v), default=float("nan"))
        console.print(
            f"{suite} {dataset} seed {seed}: ours {key} "
            + (f"{ours:.3f}" if ours is not None else f"FAILED {result[OURS]['error']}")
            + f", best peer {best:.3f} ({seconds:.0f} s)"
        )

    for seed in seeds:
        for suite in suites:
            names = {"adbench": ADBENCH, "nab": nab_series(), "skab": ["skab"], "telemetry": telemetry_files()}[suite]
            for name in names if not only or suite == "skab" else [n for n in names if n in only]:
                t0 = time.perf_counter()
                if suite == "skab":
                    for file, result in skab(seed).items():
                        record(suite, file, seed, result, time.perf_counter() - t0)
                else:
                    run = {"adbench": adbench, "nab": nab, "telemetry": telemetry}[suite]
                    record(suite, name, seed, run(name, seed), time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    (CACHE / "runs").mkdir(parents=True, exist_ok=True)
    (CACHE / "runs" / f"{label}.json").write_text(
        json.dumps(
            {"options": OPTIONS["ours"], "scoring": OPTIONS["scoring"], "seeds": seeds, "seconds": seconds, "cells": cells}
        )
    )
    publish(cells, seeds, suites, seconds, write, max_train_rows, onnx_seeds)


def publish(
    cells: list[dict], seeds: list[int], suites: list[str], seconds: float, write: bool, cap: int, onnx_seeds: list[int]
) -> None:
    """Print the tables and, for a default run, write them into BENCHMARKS.md."""
    others = [c for c in cells if c["suite"] != "telemetry"]
    report = render(others, seeds, cap, onnx_seeds, seconds) if others else ""
    command = "Command: `python bench/quality.py --suites telemetry" + "".join(f" --seeds {s}" for s in seeds) + "`"
    tables = "\n".join([command, *render_telemetry(cells, seeds, seconds)]) if "telemetry" in suites else ""
    print(report, tables, sep="\n")
    # Each part has a section of its own: the telemetry suite runs in minutes, the others in hours.
    if write and set(suites) - {"telemetry"}:
        replace_section(ROOT / "BENCHMARKS.md", "quality", f"## Detection quality\n\n{report}")
    if write and "telemetry" in suites:
        replace_section(ROOT / "BENCHMARKS.md", "telemetry", f"## Detection quality: spacecraft telemetry\n\n{tables}")


def _pairs(items: list[str]) -> dict:
    return {k: json.loads(v) for k, v in (item.split("=", 1) for item in items)}


def summarise(cells: list[dict]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per set and detector: mean ROC-AUC and AP over seeds, failures counted; per detector:
    mean ROC-AUC, mean AP and average rank over the sets where it did not fail)."""
    frame = pl.DataFrame(cells, infer_schema_length=None)
    if "error" not in frame.columns:
        frame = frame.with_columns(error=pl.lit(None, pl.String))
    per_set = frame.group_by("suite", "dataset", "detector", maintain_order=True).agg(
        pl.col("roc_auc").mean(),
        pl.col("ap").mean(),
        pl.col("error").drop_nulls().first(),
        failed=pl.col("error").is_not_null().sum(),
    )
    ranked = per_set.filter(pl.col("roc_auc").is_not_null()).with_columns(
        rank=pl.col("roc_auc").rank(descending=True).over("suite", "dataset")
    )
    summary = (
        ranked.group_by("suite", "detector", maintain_order=True)
        .agg(
            pl.col("roc_auc").mean().alias("mean ROC-AUC"),
            pl.col("ap").mean().alias("mean AP"),
            pl.col("rank").mean().alias("average rank"),
            pl.len().alias("sets"),
        )
        .sort("suite", "average rank")
    )
    return per_set, summary


def render(cells: list[dict], seeds: list[int], cap: int, onnx_seeds: list[int], seconds: float) -> str:
    """Markdown: per suite, a per-set table (ours, best peer, PyOD VAE, the gaps), then the
    summary per detector; failed cells named with their error."""
    per_set, summary = summarise(cells)
    onnx = [s for s in seeds if s in onnx_seeds]
    lines = [
        "Command: `python bench/quality.py" + "".join(f" --seeds {s}" for s in seeds if seeds != [0]) + "`",
        "",
        f"Seeds {seeds}; training rows capped at {cap:,} for every detector; wall time {seconds / 60:.1f} min; "
        f"Python {platform.python_version()}, torch {metadata.version('torch')}, "
        + (f"pyod {metadata.version('pyod')}, " if _has("pyod") else "")
        + f"onnxruntime {metadata.version('onnxruntime-gpu' if _has('onnxruntime-gpu') else 'onnxruntime')}. "
        f"Ours scored by the exported ONNX scorer for seeds {onnx} on ADBench and always on SKAB and NAB. "
        f"Peers fitted in this run for {PEER_RUNS['fitted']} (set, seed) pairs, read from bench/.cache (fitted by an "
        f"earlier run, same cap and PyOD) for {PEER_RUNS['cached']}, whose fitting time is not in this wall time.",
    ]
    for suite, title in [
        ("adbench", "ADBench (24 sets)"),
        ("skab", "SKAB (train on anomaly-free, window 10)"),
        ("nab", "NAB (train on the first 15%, window 32)"),
    ]:
        rows = per_set.filter(pl.col("suite") == suite)
        if not rows.height:
            continue
        lines += [
            "",
            f"### {title}",
            "",
            "| set | ours | best peer | PyOD VAE | ours − best peer | ours − PyOD VAE |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for dataset in rows["dataset"].unique(maintain_order=True):
            cell = rows.filter(pl.col("dataset") == dataset)
            ours = cell.filter(pl.col("detector") == OURS).row(0, named=True)
            others = cell.filter((pl.col("detector") != OURS) & pl.col("roc_auc").is_not_null()).sort(
                "roc_auc", descending=True
            )
            best = others.row(0, named=True) if others.height else None
            vae = others.filter(pl.col("detector") == "PyOD VAE")
            vae_auc = vae["roc_auc"][0] if vae.height else None
            ours_auc = ours["roc_auc"] if not ours["failed"] else None
            lines.append(
                f"| {dataset} | "
                + (f"{ours_auc:.3f}" if ours_auc is not None else f"failed: {ours['error']}")
                + " | "
                + (f"{best['roc_auc']:.3f} ({best['detector'].removeprefix('PyOD ')})" if best else "–")
                + " | "
                + (f"{vae_auc:.3f}" if vae_auc is not None else "–")
                + " | "
                + (f"{ours_auc - best['roc_auc']:+.3f}" if best and ours_auc is not None else "–")
                + " | "
                + (f"{ours_auc - vae_auc:+.3f}" if vae_auc is not None and ours_auc is not None else "–")
                + " |"
            )
        table = summary.filter(pl.col("suite") == suite)
        lines += ["", "| detector | mean ROC-AUC | mean AP | average rank | sets scored |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {r['detector']} | {r['mean ROC-AUC']:.3f} | {r['mean AP']:.3f} | {r['average rank']:.2f} | {r['sets']} |"
            for r in table.iter_rows(named=True)
        ]
    return "\n".join(lines) + "\n"


def render_telemetry(cells: list[dict], seeds: list[int], seconds: float) -> list[str]:
    """Telemetry's tables: per file ours beside KMeansAD (the published best on these files) and
    Donut (a VAE); per method the mean VUS-PR and average rank, ours among TSB-AD's published."""
    frame = pl.DataFrame([c for c in cells if c["suite"] == "telemetry"], infer_schema_length=None)
    if not frame.height or "vus_pr" not in frame.columns:
        return []
    per_file = (
        frame.filter(pl.col("vus_pr").is_not_null())
        .group_by("dataset", "detector", maintain_order=True)
        .agg(pl.col("vus_pr").mean())
    )
    wide = per_file.pivot("detector", index="dataset", values="vus_pr")
    lines = [
        "",
        f"18 NASA MSL/SMAP files, TSB-AD's protocol (train on the first `tr` rows, score every row, VUS-PR); "
        f"seeds {seeds}; wall time {seconds / 60:.1f} min. Ours: `vad train --mode sensor --time-column t` and "
        "`vad score` from the command line, start-up and export included; peers: TSB-AD's published values "
        "(../shared/data/tsbad/published_vus_pr.csv).",
        "",
        "| file | ours | KMeansAD | Donut (VAE) | ours − KMeansAD |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in wide.iter_rows(named=True):
        ours = row.get(OURS)
        lines.append(
            f"| {row['dataset'].split('_Sensor')[0]} | "
            + (f"{ours:.3f}" if ours is not None else "failed")
            + f" | {row['KMeansAD']:.3f} | {row['Donut']:.3f} | "
            + (f"{ours - row['KMeansAD']:+.3f}" if ours is not None else "–")
            + " |"
        )
    ranked = per_file.with_columns(rank=pl.col("vus_pr").rank(descending=True).over("dataset"))
    table = (
        ranked.group_by("detector")
        .agg(pl.col("vus_pr").mean().alias("mean"), pl.col("rank").mean().alias("rank"), pl.len().alias("files"))
        .sort("mean", descending=True)
        .head(8)
    )
    failed = frame.filter(pl.col("detector") == OURS).get_column("error") if "error" in frame.columns else None
    lines += ["", "| method | mean VUS-PR | average rank | files |", "|---|---:|---:|---:|"]
    lines += [f"| {r['detector']} | {r['mean']:.3f} | {r['rank']:.2f} | {r['files']} |" for r in table.iter_rows(named=True)]
    if failed is not None and failed.drop_nulls().len():
        lines += ["", f"Ours failed on {failed.drop_nulls().len()} file(s): {failed.drop_nulls()[0]}"]
    return lines


def _has(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    typer.run(main)
