"""Scoring and training speed, side by side in one run on one machine (issue 5).

    python bench/speed.py                 # everything; writes the "Speed" section of BENCHMARKS.md
    python bench/speed.py --big-rows 0    # skip the 20 M-row streaming-memory run

Every rate is rows per second from the best of `--repeats` timings; the table's claims are the
ratios, measured in this one run (the machine is shared, so absolute times drift between runs).
The model is the issue's reference shape: an MLP VAE with hidden [128, 64], latent 16 and one
member (PyOD's VAE gets the same layers); the library's default is a 5-member ensemble, whose
scorer does 5× the arithmetic and is timed on its own line."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.model.graphs import ScorerGraph  # noqa: E402
from pipeline.runtime import KernelPool, Scorer, cpu_cores, score_files  # noqa: E402
from pipeline.training.detector import VAEDetector  # noqa: E402

HIDDEN, LATENT = [128, 64], 16
THREADS = cpu_cores()


def best_seconds(action, repeats: int) -> float:
    """The fastest of `repeats` runs (after one warm-up): the least disturbed by neighbours."""
    action()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def synthetic_rows(rows: int, features: int, seed: int = 0) -> np.ndarray:
    """Correlated sensor-like rows: 8 latent factors mixed into `features` columns, plus noise."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((8, features)).astype(np.float32)
    return rng.standard_normal((rows, 8), dtype=np.float32) @ mixing + 0.3 * rng.standard_normal(
        (rows, features), dtype=np.float32
    )


def matmul_ceiling(repeats: int) -> dict[str, float]:
    """FP32 GFLOP/s of a 4096³ matrix product: numpy (its BLAS) and onnxruntime's own MatMul.
    At least 5 timings each: one run's numpy figure fell to 170 from the usual 310-317 when
    a neighbour disturbed all three of its timings."""
    n, repeats = 4096, max(repeats, 5)
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    flops = 2 * n**3
    numpy_rate = flops / best_seconds(lambda: a @ a, repeats) / 1e9
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["a", "w"], ["y"])],
        "matmul",
        [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [n, n])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, n])],
        [onnx.numpy_helper.from_array(a, "w")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 9
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_rate = flops / best_seconds(lambda: session.run(None, {"a": a}), repeats) / 1e9
    return {"numpy": numpy_rate, "onnxruntime": ort_rate}


def graph_flops_per_row(path: Path) -> int:
    """Multiply-adds ×2 of every weight matrix in the graph: the Linear layers' FLOPs per row."""
    model = onnx.load(str(path))
    return sum(
        2 * int(np.prod(t.dims))
        for t in model.graph.initializer
        if len(t.dims) >= 2 and min(t.dims[-2:]) > 1 and t.name != "to_source"
    )


def layer_shapes(features: int, hidden: list[int] = HIDDEN, latent: int = LATENT) -> list[tuple[int, int]]:
    """(inputs, outputs) of the model's six Linear layers: encoder, then decoder from mu."""
    return [
        (features, hidden[0]),
        (hidden[0], hidden[1]),
        (hidden[1], 2 * latent),
        (latent, hidden[1]),
        (hidden[1], hidden[0]),
        (hidden[0], features),
    ]


def bare_layers_graph(features: int, hidden: list[int] = HIDDEN, latent: int = LATENT, members: int = 1) -> bytes:
    """The scorer's six Linear layers alone, as Gemm (+ ReLU between hidden layers), with the
    same shapes and random weights: encoder features → hidden → 2·latent, decoder latent →
    hidden reversed → features; with `members`, that many such chains on the same input, their
    outputs side by side. No scaling, likelihood or ranking: the most a kernel of this shape
    could reach on this machine, whatever the rest of the graph does."""
    rng = np.random.default_rng(0)
    nodes, weights = [], []

    def layer(source: str, n_in: int, n_out: int, name: str, relu: bool) -> str:
        weights.extend(
            [
                onnx.numpy_helper.from_array(rng.standard_normal((n_in, n_out), dtype=np.float32) * 0.1, f"{name}_w"),
                onnx.numpy_helper.from_array(np.zeros(n_out, np.float32), f"{name}_b"),
            ]
        )
        nodes.append(onnx.helper.make_node("Gemm", [source, f"{name}_w", f"{name}_b"], [f"{name}_y"]))
        if not relu:
            return f"{name}_y"
        nodes.append(onnx.helper.make_node("Relu", [f"{name}_y"], [f"{name}_r"]))
        return f"{name}_r"

    weights.extend(
        onnx.numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("start", 0), ("end", latent), ("axis", 1))
    )
    ends = []
    for m in range(members):
        h = "x"
        for k, (n_in, n_out) in enumerate(layer_shapes(features, hidden, latent)):
            if k == 3:  # the decoder starts from mu, the first half of the encoder's output
                nodes.append(onnx.helper.make_node("Slice", [h, "start", "end", "axis"], [f"mu{m}"]))
                h = f"mu{m}"
            h = layer(h, n_in, n_out, f"m{m}l{k}", relu=k not in (2, 5))
        ends.append(h)
    if members == 1:
        nodes[-1].output[0] = "score"  # the name the kernel pool asks for
    else:
        nodes.append(onnx.helper.make_node("Concat", ends, ["score"], axis=1))
    graph = onnx.helper.make_graph(
        nodes,
        "bare_layers",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["rows", features])],
        [onnx.helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["rows", features * members])],
        weights,
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def torch_bare_layers(features: int):
    """The same six layers as `bare_layers_graph`, in torch eager: a second library's GEMMs."""
    rng = np.random.default_rng(0)
    shapes = layer_shapes(features)
    weights = [torch.from_numpy(rng.standard_normal(shape, dtype=np.float32) * 0.1) for shape in shapes]
    biases = [torch.zeros(shape[1]) for shape in shapes]

    @torch.no_grad()
    def run(rows: torch.Tensor, chunk: int) -> None:
        for i in range(0, len(rows), chunk):
            h = rows[i : i + chunk]
            for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
                h = torch.addmm(b, h[:, :LATENT] if k == 3 else h, w)
                if k not in (2, 5):
                    h.relu_()

    return run


def rebased_line(tag: str, kernel_share: float, bound_share: float) -> tuple[str, str, str]:
    """Issue 19's re-based bars: the kernel against its bare layers (≥ 0.85), and end to end
    against the core-second bound, the rate with every core busy all the time on the work end
    to end costs (≥ 0.9)."""
    return (
        f"{tag}: re-based ratios (bars 0.85 and 0.9)",
        f"kernel {kernel_share:.2f} of its bare layers",
        f"end to end {bound_share:.2f} of the core-second bound",
    )


def defaults_block(sizes: list[int], score_rows: int, repeats: int, folder: Path) -> list[tuple[str, str, str]]:
    """What users run: bench/time_to_model.py's lines (time to a model at each size against
    PyOD's VAE and IForest, default scoring end to end, export alone), then the default model's
    kernel against its bare layers and end to end against the core-second bound."""
    import time_to_model

    measured, version, scored = time_to_model.measure(sizes, repeats, score_rows, folder)
    lines = [(f"defaults: {what}", value, ratio) for what, value, ratio in measured]
    if version is None or scored is None:
        return lines
    scorer = Scorer.load(version)
    shape = scorer.manifest.model
    x = np.ascontiguousarray(pl.read_parquet(scored).to_numpy(), dtype=np.float32)
    outputs = ["score", "top_index", "top_share"]
    kernel = scorer.kernel()
    kernel_rate = len(x) / best_seconds(lambda: kernel.run(outputs, x), repeats)
    bare = KernelPool(
        bare_layers_graph(shape["n_inputs"], list(shape["hidden"]), shape["latent"], shape["members"]), "cpu", "bare layers"
    )
    bare_rate = len(x) / best_seconds(lambda: bare.run(["score"], x), repeats)
    output = folder / "rebased.parquet"
    e2e_rate = len(x) / best_seconds(lambda: score_files(scorer, scored, output), repeats)
    e2e_cpu = core_seconds(lambda: score_files(scorer, scored, output))
    tag = f"defaults: {shape['members']}-member model, hidden {list(shape['hidden'])}, latent {shape['latent']}"
    return lines + [
        (
            f"{tag}: fused scorer kernel",
            f"{kernel_rate / 1e3:,.0f} k rows/s",
            f"end to end {e2e_rate / kernel_rate:.2f} of it",
        ),
        (f"{tag}: its {6 * shape['members']} Linear layers alone (Gemm + ReLU)", f"{bare_rate / 1e3:,.0f} k rows/s", ""),
        (
            f"{tag}: `score_files` end to end, drift measured, best of {repeats}",
            f"{e2e_rate / 1e3:,.0f} k rows/s",
            f"{e2e_cpu:.2f} core-s per {len(x) / 1e6:g} M rows",
        ),
        rebased_line(tag, kernel_rate / bare_rate, e2e_rate / (len(x) * THREADS / e2e_cpu)),
    ]


def write_rows(path: Path, x: np.ndarray, compression: str = "zstd") -> Path:
    """`x` as a Parquet file with columns f0, f1, …, in row groups of 131,072."""
    pl.DataFrame(x, schema=[f"f{i}" for i in range(x.shape[1])]).write_parquet(
        path, compression=compression, row_group_size=131072
    )
    return path


def core_seconds(action) -> float:
    """Process CPU time (all threads) of one run of `action`, after a warm-up."""
    action()
    started = time.process_time()
    action()
    return time.process_time() - started


def train_model(x: np.ndarray, folder: Path, members: int, epochs: int) -> tuple[Path, VAEDetector]:
    detector = VAEDetector(
        hidden=HIDDEN,
        latent=LATENT,
        members=members,
        epochs=epochs,
        batch_size=4096,
        learning_rate=3e-3,
        patience=epochs,
        random_state=0,
    )
    detector.fit(pl.DataFrame(x, schema=[f"f{i}" for i in range(x.shape[1])]))
    return detector.export(folder, f"speed-{x.shape[1]}-{members}"), detector


def training_rates(x: np.ndarray, epochs: int, repeats: int = 2) -> dict[str, float]:
    """Rows per second of optimisation: ours (batch 4096, whole set on the device) against
    PyOD's VAE `fit` (batch 256) with the same layers, on the same rows. Each is warmed up
    first (a process's first fit pays torch's one-off start-up: 240 k rows/s cold against
    480 k warm, measured), then the two alternate and each keeps its best time."""
    from pyod.models.vae import VAE as PyodVAE

    def ours(rows: np.ndarray, n_epochs: int) -> None:
        VAEDetector(
            hidden=HIDDEN,
            latent=LATENT,
            members=1,
            epochs=n_epochs,
            batch_size=4096,
            learning_rate=3e-3,
            patience=n_epochs,
            random_state=0,
            progress=False,
        ).fit(rows)

    def theirs(rows: np.ndarray, n_epochs: int) -> None:
        PyodVAE(
            encoder_neuron_list=HIDDEN,
            decoder_neuron_list=HIDDEN[::-1],
            latent_dim=LATENT,
            epoch_num=n_epochs,
            batch_size=256,
            verbose=0,
            random_state=0,
            device="cpu",
        ).fit(rows)

    ours(x[:10_000], 1)
    theirs(x[:10_000], 1)
    times: dict[str, list[float]] = {"ours": [], "pyod": []}
    for _ in range(repeats):
        for name, fit in (("ours", ours), ("pyod", theirs)):
            started = time.perf_counter()
            fit(x, epochs)
            times[name].append(time.perf_counter() - started)
    return {name: len(x) * epochs / min(seconds) for name, seconds in times.items()}


def large_batch_quality(data: Path) -> list[tuple[str, float, float]] | None:
    """ROC-AUC and fit seconds on ADBench's largest set (10_cover, 286 k rows, 70/30 split):
    the library's default batch 256 against the batch 4096 timed above, each to early stopping.
    Shows whether the large batch (with its larger learning rate) keeps quality."""
    from sklearn.metrics import roc_auc_score

    path = data / "adbench" / "10_cover.npz"
    if not path.exists():
        return None
    arrays = np.load(path)
    x, y = arrays["X"].astype(np.float32), arrays["y"]
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[: int(0.7 * len(x))], order[int(0.7 * len(x)) :]
    results = []
    for batch, rate in ((256, 1e-3), (4096, 3e-3)):
        detector = VAEDetector(
            hidden=HIDDEN, latent=LATENT, members=1, epochs=50, batch_size=batch, learning_rate=rate, random_state=0
        )
        started = time.perf_counter()
        detector.fit(x[train])
        seconds = time.perf_counter() - started
        results.append(
            (f"batch {batch}, learning rate {rate:g}", roc_auc_score(y[test], detector.anomaly_score(x[test])), seconds)
        )
    return results


INT8_SETS = [
    "6_cardio",
    "7_Cardiotocography",
    "10_cover",
    "12_fault",
    "17_InternetAds",
    "22_magic.gamma",
    "25_musk",
    "32_shuttle",
]


def int8_quality(data: Path, folder: Path, max_train_rows: int = 50_000) -> list[tuple[str, float, float]]:
    """ROC-AUC of the fp32 and the int8 scorer of the library's default model on each ADBench
    set (bench/quality.py's split, seed 0): what quantisation costs in detection. The eight
    sets this was first measured on, so the figure stays comparable (the quality bench has 24)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    results = []
    for name in INT8_SETS:
        path = data / "adbench" / f"{name}.npz"
        if not path.exists():
            continue
        arrays = np.load(path)
        x_train, x_test, _, y_test = train_test_split(
            arrays["X"].astype(np.float32), arrays["y"], test_size=0.3, stratify=arrays["y"], random_state=0
        )
        detector = VAEDetector(random_state=0, progress=False).fit(x_train[:max_train_rows])
        version = detector.export(folder, f"int8-{name}", int8=True)
        fp32, int8 = (
            roc_auc_score(y_test, Scorer.load(version, precision=p).score_array(x_test).score) for p in ("fp32", "int8")
        )
        results.append((name, fp32, int8))
    return results


def peak_rss_of(code: str) -> tuple[float, float]:
    """Run Python `code` in a fresh interpreter; its own peak resident memory (MB) and wall time.

    The peak is the child's VmHWM, not `ru_maxrss`: Linux carries the forking parent's
    high-water mark across exec into `ru_maxrss`, so from this (2 GB) process every child
    would seem to peak at 2 GB."""
    report = "; print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code + report], check=True, cwd=ROOT, capture_output=True, text=True)
    return int(done.stdout.split()[-1]) / 1024, time.perf_counter() - started


def write_big_file(path: Path, rows: int, features: int) -> None:
    """`rows` rows written in row groups, never all in memory."""
    names = [f"f{i}" for i in range(features)]
    block = 1_000_000
    with pq.ParquetWriter(path, pa.schema([(n, pa.float32()) for n in names])) as writer:
        for start in range(0, rows, block):
            chunk = synthetic_rows(min(block, rows - start), features, seed=start)
            writer.write_table(pa.table({n: chunk[:, i] for i, n in enumerate(names)}), row_group_size=131072)


def main(
    rows: int = 1_000_000,
    big_rows: int = 20_000_000,
    repeats: int = 3,
    train_rows: int = 100_000,
    train_epochs: int = 10,
    write: bool = True,
    default_sizes: list[int] = typer.Option([2_000, 20_000, 100_000], help="Training sizes of the defaults block."),
    defaults: bool = typer.Option(True, help="Measure the defaults block (bench/time_to_model.py's lines)."),
) -> None:
    torch.set_num_threads(THREADS)
    console = Console()
    started_all = time.perf_counter()
    lines: list[tuple[str, str, str]] = []  # (what, measured, ratio)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vad-speed-") as tmp:
        tmp_path = Path(tmp)
        ceiling = matmul_ceiling(repeats)
        top_ceiling = max(ceiling.values())
        lines.append(("FP32 matmul ceiling, 4096³, numpy", f"{ceiling['numpy']:.0f} GFLOP/s", ""))
        lines.append(
            (
                "FP32 matmul ceiling, 4096³, onnxruntime MatMul",
                f"{ceiling['onnxruntime']:.0f} GFLOP/s",
                f"{ceiling['onnxruntime'] / ceiling['numpy']:.2f} of numpy",
            )
        )
        for features in (32, 128):
            x = synthetic_rows(rows, features)
            source = write_rows(tmp_path / f"rows-{features}.parquet", x)
            folder, detector = train_model(x[:50_000], tmp_path / "models", members=1, epochs=2)
            scorer = Scorer.load(folder)
            flops = graph_flops_per_row(folder / "scorer.onnx")
            kernel = scorer.kernel()
            rates = {}
            for chunk in (512, 1024, 2048, 4096, 8192, 16384):
                kernel.chunk = chunk
                rates[chunk] = rows / best_seconds(lambda: kernel.run(["score", "top_index", "top_share"], x), repeats)
            best_chunk = max(rates, key=rates.get)
            kernel.chunk = best_chunk
            kernel_rate = rates[best_chunk]
            gflops = kernel_rate * flops / 1e9
            tag = f"{features} features"
            lines.append(
                (
                    f"{tag}: fused scorer kernel, chunks of {best_chunk} (of {sorted(rates)})",
                    f"{kernel_rate / 1e6:.2f} M rows/s = {gflops:.0f} GFLOP/s",
                    f"{gflops / top_ceiling:.2f} of ceiling ({gflops / ceiling['onnxruntime']:.2f} of ORT's)",
                )
            )
            bare = KernelPool(bare_layers_graph(features), "cpu", "bare layers")
            bare.chunk = best_chunk
            bare_gflops = rows / best_seconds(lambda: bare.run(["score"], x), repeats) * flops / 1e9
            lines.append(
                (
                    f"{tag}: the six Linear layers alone (Gemm + ReLU, same shapes), chunks of {best_chunk}",
                    f"{bare_gflops:.0f} GFLOP/s",
                    f"{bare_gflops / top_ceiling:.2f} of ceiling; kernel {gflops / bare_gflops:.2f} of it",
                )
            )
            torch_bare = torch_bare_layers(features)
            torch_rows = torch.from_numpy(x[:262_144])
            torch_gflops = len(torch_rows) / best_seconds(lambda: torch_bare(torch_rows, best_chunk), repeats) * flops / 1e9
            lines.append(
                (
                    f"{tag}: the six Linear layers alone in torch (its own GEMMs), chunks of {best_chunk}",
                    f"{torch_gflops:.0f} GFLOP/s",
                    f"{torch_gflops / top_ceiling:.2f} of ceiling",
                )
            )
            if features == 32:  # the same shape on skewed columns: every input goes through the rank-Gauss map
                skewed = np.exp(x / x.std(axis=0))
                mapped_kernel = Scorer.load(
                    train_model(skewed[:50_000], tmp_path / "models", members=1, epochs=2)[0]
                ).kernel()
                mapped_kernel.chunk = best_chunk
                mapped_rate = rows / best_seconds(
                    lambda: mapped_kernel.run(["score", "top_index", "top_share"], skewed), repeats
                )
                lines.append(
                    (
                        f"{tag}: scorer kernel with every input skewed (quantile map on all 32)",
                        f"{mapped_rate / 1e6:.2f} M rows/s",
                        f"{mapped_rate / kernel_rate:.2f} of kernel",
                    )
                )
            int8_kernel = Scorer.load(
                detector.export(tmp_path / "models", f"speed-{features}-int8", int8=True), precision="int8"
            ).kernel()
            int8_kernel.chunk = best_chunk
            int8_rate = rows / best_seconds(lambda: int8_kernel.run(["score", "top_index", "top_share"], x), repeats)
            lines.append(
                (
                    f"{tag}: int8 scorer kernel (dynamic quantisation), chunks of {best_chunk}",
                    f"{int8_rate / 1e6:.2f} M rows/s",
                    f"{int8_rate / kernel_rate:.2f}× fp32",
                )
            )
            output = tmp_path / "scores.parquet"
            e2e_rate = rows / best_seconds(lambda: score_files(scorer, source, output), repeats)
            lines.append(
                (
                    f"{tag}: `score` end to end, Parquet (zstd, polars' default) → Parquet",
                    f"{e2e_rate / 1e6:.2f} M rows/s",
                    f"{e2e_rate / kernel_rate:.2f} of kernel",
                )
            )
            kernel_cpu = core_seconds(lambda: kernel.run(["score", "top_index", "top_share"], x))
            e2e_cpu = core_seconds(lambda: score_files(scorer, source, output))
            lines.append(
                (
                    f"{tag}: core-seconds per {rows / 1e6:g} M rows, end to end vs kernel",
                    f"{e2e_cpu:.2f} vs {kernel_cpu:.2f} core-s",
                    f"end to end ≤ {rows / kernel_rate * THREADS / e2e_cpu:.2f} of kernel, {THREADS} cores busy",
                )
            )
            lines.append(rebased_line(tag, kernel_rate / (bare_gflops * 1e9 / flops), e2e_rate / (rows * THREADS / e2e_cpu)))
            snappy = write_rows(tmp_path / f"rows-{features}-snappy.parquet", x, "snappy")
            snappy_rate = rows / best_seconds(lambda: score_files(scorer, snappy, output), repeats)
            lines.append(
                (
                    f"{tag}: `score` end to end, Parquet (snappy: pyarrow's, Spark's default) → Parquet",
                    f"{snappy_rate / 1e6:.2f} M rows/s",
                    f"{snappy_rate / kernel_rate:.2f} of kernel",
                )
            )
            command = [
                sys.executable,
                "-m",
                "pipeline.cli",
                "score",
                str(folder),
                str(source),
                "--output",
                str(output),
                "--show",
                "0",
            ]
            cli_rate = rows / best_seconds(lambda: subprocess.run(command, cwd=ROOT, check=True, capture_output=True), 1)
            lines.append(
                (
                    f"{tag}: `vad score` command, with interpreter start and imports",
                    f"{cli_rate / 1e6:.2f} M rows/s",
                    f"{cli_rate / kernel_rate:.2f} of kernel",
                )
            )
            graph = ScorerGraph(detector.model_, detector.scaler_).eval()

            def torch_eager() -> None:
                with torch.no_grad():
                    for i in range(0, len(torch_rows), 4096):
                        graph(torch_rows[i : i + 4096])

            torch_rate = len(torch_rows) / best_seconds(torch_eager, repeats)
            lines.append(
                (
                    f"{tag}: torch eager, same graph, batch 4096",
                    f"{torch_rate / 1e6:.2f} M rows/s",
                    f"kernel {kernel_rate / torch_rate:.1f}×",
                )
            )
            from pyod.models.vae import VAE as PyodVAE
            from sklearn.ensemble import IsolationForest

            pyod = PyodVAE(
                encoder_neuron_list=HIDDEN,
                decoder_neuron_list=HIDDEN[::-1],
                latent_dim=LATENT,
                epoch_num=1,
                batch_size=256,
                verbose=0,
                random_state=0,
                device="cpu",
            ).fit(x[:20_000])
            sample = x[:100_000]
            pyod_rate = len(sample) / best_seconds(lambda: pyod.decision_function(sample), 1)
            lines.append(
                (
                    f"{tag}: PyOD VAE decision_function",
                    f"{pyod_rate / 1e6:.3f} M rows/s",
                    f"end to end {e2e_rate / pyod_rate:.1f}×",
                )
            )
            forest = IsolationForest(n_jobs=THREADS, random_state=0).fit(x[:50_000])
            forest_sample = x[:200_000]
            forest_rate = len(forest_sample) / best_seconds(lambda: forest.score_samples(forest_sample), 1)
            lines.append(
                (
                    f"{tag}: scikit-learn IsolationForest score_samples ({THREADS} jobs)",
                    f"{forest_rate / 1e6:.3f} M rows/s",
                    f"end to end {e2e_rate / forest_rate:.1f}×",
                )
            )
            one = x[:1]
            calls = 2000
            latency = best_seconds(lambda: [scorer.score_array(one, top_k=3) for _ in range(calls)], repeats) / calls
            lines.append((f"{tag}: batch of 1 through Scorer.score_array", f"{latency * 1e6:.1f} µs per call", ""))
            figures.update(
                {
                    f"kernel_{features}": kernel_rate,
                    f"e2e_{features}": e2e_rate,
                    f"ceiling_share_{features}": gflops / top_ceiling,
                    f"latency_{features}": latency,
                }
            )
            if features == 32:
                ensemble, _ = train_model(x[:50_000], tmp_path / "models", members=5, epochs=1)
                ensemble_kernel = Scorer.load(ensemble).kernel()
                ensemble_rate = rows / best_seconds(
                    lambda: ensemble_kernel.run(["score", "top_index", "top_share"], x), repeats
                )
                lines.append(
                    (
                        f"{tag}: default 5-member ensemble, fused scorer kernel",
                        f"{ensemble_rate / 1e6:.2f} M rows/s",
                        f"{ensemble_rate / kernel_rate:.2f} of one member",
                    )
                )
        train_x = synthetic_rows(train_rows, 32, seed=1)
        training = training_rates(train_x, train_epochs)
        lines.append(
            (
                f"training, 32 features, {train_rows:,} rows × {train_epochs} epochs, batch 4096",
                f"{training['ours'] / 1e3:.0f} k rows/s",
                f"PyOD fit {training['ours'] / training['pyod']:.1f}×",
            )
        )
        lines.append(("PyOD VAE fit, same layers, batch 256", f"{training['pyod'] / 1e3:.0f} k rows/s", ""))
        quality = large_batch_quality(ROOT.parent / "shared" / "data")
        for label, auc, seconds in quality or []:
            lines.append(
                (
                    f"10_cover (200 k training rows), {label}, to early stopping",
                    f"ROC-AUC {auc:.3f}",
                    f"fit {seconds:.0f} s ({quality[0][2] / seconds:.1f}× batch 256)",
                )
            )
        quantised = int8_quality(ROOT.parent / "shared" / "data", tmp_path / "int8")
        if quantised:
            fp32_mean, int8_mean = (float(np.mean([r[i] for r in quantised])) for i in (1, 2))
            worst = max(quantised, key=lambda r: abs(r[2] - r[1]))
            lines.append(
                (
                    f"int8 vs fp32 scorer, default 5-member model, ADBench ({len(quantised)} sets, seed 0)",
                    f"mean ROC-AUC {int8_mean:.4f} vs {fp32_mean:.4f}",
                    f"change {int8_mean - fp32_mean:+.4f}; largest {worst[0]} {worst[2] - worst[1]:+.4f}",
                )
            )
        if big_rows:
            big = tmp_path / "big.parquet"
            write_big_file(big, big_rows, 32)
            os.sync()  # the file's dirty pages go to disk now, not while it is being scored
            folder = next((tmp_path / "models").glob("speed-32-1"))
            code = (
                f"from pipeline.runtime import Scorer, score_files; "
                f"score_files(Scorer.load({str(folder)!r}), {str(big)!r}, {str(tmp_path / 'big-scores.parquet')!r})"
            )
            peak_mb, seconds = peak_rss_of(code)
            size_gb = big.stat().st_size / 1e9
            lines.append(
                (
                    f"streaming: {big_rows:,} rows × 32 features ({size_gb:.1f} GB Parquet), fresh process",
                    f"peak RSS {peak_mb:,.0f} MB",
                    f"{big_rows / seconds / 1e6:.2f} M rows/s",
                )
            )
        if defaults:
            lines += defaults_block(default_sizes, rows, repeats, tmp_path / "defaults")
    wall = time.perf_counter() - started_all
    table = Table(title=f"Speed ({THREADS} cores)")
    for column in ("what", "measured", "ratio"):
        table.add_column(column)
    for row in lines:
        table.add_row(*row)
    console.print(table)
    if write:
        write_section(lines, wall)


def write_section(lines: list[tuple[str, str, str]], wall: float) -> None:
    """Replace the Speed section of BENCHMARKS.md (or append it) with this run's table."""
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    rows = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in lines)
    section = f"""## Speed (issue 5)

Command: `python bench/speed.py` ({wall / 60:.1f} min). One run, {THREADS} cores, {cpu};
onnxruntime {ort.__version__}, torch {torch.__version__}, polars {pl.__version__}. Model: MLP VAE,
hidden {HIDDEN}, latent {LATENT}, one member (PyOD's VAE has the same layers). Rates are the
best of 3 timings; compare the ratios, which were measured side by side, not absolute times.
The "defaults" lines are what users run, in the same run: `vad train` and the default 5-member
model on 32 columns (half skewed) against PyOD's `VAE()` and `IForest()` at their defaults, with
the ROC-AUC each gets on rows with 2% injected anomalies (bench/time_to_model.py's protocol;
time to a model the median of 3 alternating rounds up to 20,000 rows, each fit warmed up once
first; scoring 1 M rows the median of 3 alternating rounds, ours against IForest, PyOD's VAE
once; the re-based lines best of 3).

| what | measured | ratio |
|---|---|---|
{rows}
"""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if "## Speed (issue 5)" in text:
        text = re.sub(r"## Speed \(issue 5\).*?(?=\n## |\Z)", section.rstrip() + "\n", text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    typer.run(main)
