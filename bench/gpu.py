"""Training on CUDA and scoring with onnxruntime's CUDA and TensorRT providers, each against the
same machine's CPU path, in one run (issue 22).

    python bench/gpu.py             # on a machine with a CUDA GPU: writes the "GPU" section of BENCHMARKS.md
    python bench/gpu.py --dry-run   # any machine: the same code at tiny sizes on the CPU (a test runs it)

The model is the library's default (5 members, hidden and latent from the 32 inputs), trained
on synthetic sensor-like rows as bench/speed.py makes them. Rates are rows per second from the
best of several timings; compare the ratios, measured side by side on one machine."""

from __future__ import annotations

import ctypes
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort
import polars as pl
import pyarrow.parquet as pq
import torch
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scaling import core_counts, pyarrow_before, run_child  # noqa: E402
from sections import replace_section  # noqa: E402

from pipeline.core.config import PipelineConfig, TrainConfig, load_config  # noqa: E402
from pipeline.data import ingest  # noqa: E402
from pipeline.model.train import train_vae, training_plan  # noqa: E402
from pipeline.model.vae import VAEShape  # noqa: E402
from pipeline.runtime import (  # noqa: E402
    KernelPool,
    Scorer,
    cpu_cores,
    default_chunk_rows,
    score_files,
    write_scores,
)
from pipeline.runtime.providers import CPU, CUDA, TENSORRT, provider_options  # noqa: E402
from pipeline.training.fit import fit_model  # noqa: E402

OUTPUTS = ["score", "top_index", "top_share"]  # what `vad score` asks the scorer for
Row = tuple[str, str, str]  # what, measured, ratio or note
T = TypeVar("T")


def synthetic_rows(rows: int, features: int = 32, seed: int = 0) -> np.ndarray:
    """Correlated sensor-like rows (8 latent factors mixed into `features` columns, plus noise),
    half the columns exponentiated so the default input map has skewed columns to map."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((8, features)).astype(np.float32)
    x = rng.standard_normal((rows, 8), dtype=np.float32) @ mixing + 0.3 * rng.standard_normal(
        (rows, features), dtype=np.float32
    )
    x[:, ::2] = np.exp(x[:, ::2] / x[:, ::2].std(axis=0))
    return x


def timed(action: Callable[[], object], min_seconds: float = 0.3, max_calls: int = 2000) -> float:
    """Seconds per call: the best of three rounds, each repeating `action` until `min_seconds`
    have passed (after one warm-up call, which also builds TensorRT engines and CUDA graphs)."""
    action()
    best = float("inf")
    for _ in range(3):
        calls, started = 0, time.perf_counter()
        while calls < max_calls and (calls == 0 or time.perf_counter() - started < min_seconds):
            action()
            calls += 1
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def reason(exc: BaseException) -> str:
    """An error in one line: onnxruntime's CUDA errors name the cause at their end."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 240 else f"{text[:100]} … {text[-140:]}"


def injected(rows: int, features: int = 32, share: float = 0.02, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Fresh rows of the training distribution with `share` of them made anomalous: four
    columns of each pushed three standard deviations off. Returns rows and labels."""
    x = synthetic_rows(rows, features, seed)
    rng = np.random.default_rng(seed)
    labels = rng.random(rows) < share
    for row in np.flatnonzero(labels):
        columns = rng.choice(features, 4, replace=False)
        x[row, columns] += 3 * x[:, columns].std(axis=0)
    return x, labels


def frame(x: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(x, schema=[f"f{i}" for i in range(x.shape[1])])


class Report:
    """The table's rows, each printed as it is measured, so a run cut short still shows its
    figures; a block that fails becomes a row with its error, and the run goes on."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, what: str, measured: str, note: str = "") -> None:
        self.rows.append((what, measured, note))
        print(f"| {what} | {measured} | {note} |", flush=True)

    def block(self, name: str, action: Callable[..., T], *args: object) -> T | None:
        try:
            return action(self, *args)
        except Exception as exc:  # noqa: BLE001 - the failure is reported in the table
            traceback.print_exc()
            self.add(name, f"failed: {type(exc).__name__}: {reason(exc)}")
            return None


# -- training ---------------------------------------------------------------------------------
def epoch_rate(history: list[dict]) -> float:
    """Rows per second of the epochs after the first (which pays CUDA's and the allocator's start-up)."""
    epochs = history[1:] or history
    return float(np.median([h["rows_per_s"] for h in epochs]))


def one_epoch_rate(x: np.ndarray, device: str, batch_size: int | None = None) -> tuple[float, int]:
    """Rows per second of a training epoch at `batch_size` (None: the device's own choice)."""
    config = TrainConfig(epochs=2, patience=2, device=device, batch_size=batch_size, progress=False)
    split = int(0.9 * len(x))
    result = train_vae(x[:split], x[split:], PipelineConfig().model, config)
    return epoch_rate(result.history), result.plan.batch_size


def training_jobs(report: Report, x: np.ndarray, device: str, root: Path, epochs: int) -> dict:
    """`vad train`'s job (read, fit to early stopping, threshold, export) on `device`, in fp32
    and with bf16 autocast: the same rows and validation split, so the objectives compare."""
    source = root / "train.parquet"
    frame(x).write_parquet(source)
    jobs = {}
    for bf16 in (False, True):
        config = load_config(
            None,
            name=f"gpu-bench-{'bf16' if bf16 else 'fp32'}",
            train={"device": device, "bf16": bf16, "epochs": epochs, "progress": False},
        )
        started = time.perf_counter()
        outcome = fit_model(source, config, root / "models")
        seconds = time.perf_counter() - started
        result = outcome.calibrated.result
        train_seconds = sum(h["seconds"] for h in result.history)
        rate = epoch_rate(result.history)
        plan = result.plan
        report.add(
            f"`vad train` job on {device}, {'bf16 autocast' if bf16 else 'fp32'} (batch {plan.batch_size}, "
            f"learning rate {plan.learning_rate:.2g}), {len(result.history)} epochs to early stopping",
            f"{rate / 1e3:,.1f} k rows/s; model in {seconds:.1f} s",
            f"{train_seconds:.1f} s training, {seconds - train_seconds:.1f} s reading, threshold and export",
        )
        jobs["bf16" if bf16 else "fp32"] = {"objective": result.best_validation, "rate": rate, "folder": outcome.version_dir}
    fp32, bf16 = jobs["fp32"], jobs["bf16"]
    change = (bf16["objective"] - fp32["objective"]) / abs(fp32["objective"])
    report.add(
        "validation objective (negative β-ELBO), bf16 vs fp32",
        f"{bf16['objective']:.4f} vs {fp32['objective']:.4f}",
        f"{change:+.2%} ({'within' if abs(change) <= 0.01 else 'outside'} 1%); "
        f"bf16 {bf16['rate'] / fp32['rate']:.2f}× fp32 rows/s",
    )
    return jobs


def batch_quality(report: Report, x: np.ndarray, device: str, epochs: int) -> None:
    """Each candidate batch (with its scaled learning rate) trained to early stopping on the same
    split: rows/s, the objective reached, and ROC-AUC on injected anomalies, so that the batch
    the GPU takes is chosen for speed without losing the model."""
    from sklearn.metrics import roc_auc_score

    from pipeline.model.graphs import score_with_torch

    split = int(0.9 * len(x))
    fresh, labels = injected(min(len(x), 100_000))
    chosen = training_plan(split, torch.device(device), TrainConfig(), default_shape(x)).batch_size
    for batch in sorted({256 if device == "cpu" else 4096, chosen}):
        config = TrainConfig(epochs=epochs, device=device, batch_size=batch, progress=False)
        started = time.perf_counter()
        result = train_vae(x[:split], x[split:], PipelineConfig().model, config)
        seconds = time.perf_counter() - started
        auc = roc_auc_score(labels, score_with_torch(result.model, result.scaler, fresh)[0])
        report.add(
            f"training on {device} to early stopping, batch {batch} (learning rate {result.plan.learning_rate:.2g})"
            f"{' (the default)' if batch == chosen else ''}",
            f"objective {result.best_validation:.4f}, ROC-AUC {auc:.4f}",
            f"{epoch_rate(result.history) / 1e3:,.0f} k rows/s, {len(result.history)} epochs, {seconds:.1f} s",
        )


def default_shape(x: np.ndarray) -> VAEShape:
    """The default model's shape for `x`'s columns (the training plan depends on it)."""
    model = PipelineConfig().model
    return VAEShape.for_inputs(x.shape[1], model.hidden, model.latent, model.likelihood, model.dropout, model.members)


def training_rates(report: Report, x: np.ndarray, device: str, cpu_rows: int, gpu_rate: float | None) -> None:
    """Rows/s of the product's CPU path (its default batch, and CUDA's) on this machine's
    cores, and of CUDA across batch sizes: where the GPU's choice of batch comes from."""
    cpu_rate, cpu_batch = one_epoch_rate(x[:cpu_rows], "cpu")
    report.add(
        f"training on the CPU ({cpu_cores()} cores), product default batch {cpu_batch}",
        f"{cpu_rate / 1e3:,.1f} k rows/s",
        f"{cpu_rows:,} rows",
    )
    chosen = training_plan(int(0.9 * len(x)), torch.device(device), TrainConfig(), default_shape(x))
    cpu_same, _ = one_epoch_rate(x[:cpu_rows], "cpu", chosen.batch_size)
    report.add(
        f"training on the CPU, batch {chosen.batch_size} (the GPU's)",
        f"{cpu_same / 1e3:,.1f} k rows/s",
        f"{cpu_same / cpu_rate:.2f}× the CPU default",
    )
    if gpu_rate is not None:
        report.add(
            f"training: the `vad train` job on {device} against the CPU default",
            f"{gpu_rate / cpu_rate:.1f}×",
            "rows/s, same model, same machine",
        )
    for batch in sorted({256, 1024, 4096, chosen.batch_size, 65536} if device == "cuda" else {chosen.batch_size}):
        rows = x[: max(200_000, 64 * batch)]  # small batches are slow: fewer rows give the same rate
        rate, _ = one_epoch_rate(rows, device, batch)
        report.add(
            f"training on {device}, batch {batch}, {len(rows):,} rows",
            f"{rate / 1e3:,.1f} k rows/s",
            f"{rate / cpu_rate:.1f}× CPU default",
        )


# -- scoring ----------------------------------------------------------------------------------
def bound_run(
    session: ort.InferenceSession, x: np.ndarray, device: str, fixed_outputs: bool = False
) -> Callable[[], object]:
    """A call of the scorer with input and outputs on `device` (IO binding: no copy per call).
    With `fixed_outputs` the outputs are preallocated, as CUDA graphs need fixed addresses."""
    binding = session.io_binding()
    value = ort.OrtValue.ortvalue_from_numpy(x, device, 0)
    binding.bind_ortvalue_input("x", value)
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
    for output in session.get_outputs():
        if output.name not in OUTPUTS:
            continue
        if fixed_outputs:
            shape = [len(x), *output.shape[1:]]
            binding.bind_ortvalue_output(
                output.name, ort.OrtValue.ortvalue_from_shape_and_type(shape, types[output.type], device, 0)
            )
        else:
            binding.bind_output(output.name, device)
    return lambda: session.run_with_iobinding(binding)


def gpu_session(model: bytes, providers: list[tuple[str, dict]]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=providers)


def tensorrt_missing() -> str | None:
    """Why TensorRT cannot run here (its runtime library is absent), or None."""
    try:
        ctypes.CDLL("libnvinfer.so.10")
    except OSError as exc:
        return f"TensorRT's runtime is not installed ({exc})"
    return None


def scoring_rates(report: Report, folder: Path, x: np.ndarray, batches: list[int], gpu: bool) -> None:
    """Kernel rows/s against batch size: the CPU pool (one session per core), the product's GPU
    path (host arrays in and out), the CUDA provider with IO binding, with CUDA graphs, and
    TensorRT (fp16, engine cache). Where a variant cannot run, the reason is the row."""
    model = (folder / "scorer.onnx").read_bytes()
    cpu_pool = Scorer.load(folder, provider="cpu").kernel()
    device = "cuda" if gpu else "cpu"
    variants: dict[str, Callable[[int], Callable[[], object]] | str] = {
        "CPU pool": lambda b: lambda: cpu_pool.run(OUTPUTS, x[:b]),
    }
    if gpu:
        product = KernelPool(model, "cuda", "scorer")
        product.gpu_chunk = max(batches)
        variants["CUDA, host arrays (product path)"] = lambda b: lambda: product.run(OUTPUTS, x[:b])
    plain = gpu_session(model, provider_options([CUDA, CPU] if gpu else [CPU]))
    variants[f"{'CUDA' if gpu else 'CPU'}, IO binding (data on the device)"] = lambda b: bound_run(plain, x[:b], device)
    if gpu:
        variants["CUDA, IO binding + CUDA graph"] = lambda b: bound_run(
            gpu_session(model, [(CUDA, {"enable_cuda_graph": "1"}), (CPU, {})]), x[:b], device, fixed_outputs=True
        )
        missing = tensorrt_missing()
        if missing:
            variants["TensorRT fp16"] = f"not run: {missing}"
        else:
            cache = folder / ".tensorrt-cache"
            cache.mkdir(exist_ok=True)
            trt = gpu_session(model, provider_options([TENSORRT, CUDA, CPU], cache, fp16=True))
            variants["TensorRT fp16, IO binding, engine cache"] = lambda b: (
                bound_run(trt, x[:b], device)
                if trt.get_providers()[0] == TENSORRT
                else f"not run: onnxruntime fell back to {trt.get_providers()}"
            )
    rates: dict[str, dict[int, float]] = {}
    for name, make in variants.items():
        if isinstance(make, str):
            report.add(f"kernel, {name}", make)
            continue
        rates[name] = {}
        for b in batches:
            try:
                rates[name][b] = b / timed(make(b), min_seconds=0.2)
            except Exception as exc:  # noqa: BLE001 - e.g. a graph that CUDA graphs cannot capture
                report.add(f"kernel, {name}, batch {b:,}", f"not run: {reason(exc)}")
                break
            note = "" if name == "CPU pool" else f"{rates[name][b] / rates['CPU pool'][b]:.2f}× CPU pool"
            report.add(f"kernel, {name}, batch {b:,}", f"{rates[name][b] / 1e6:,.3f} M rows/s", note)
    path = next(iter(n for n in rates if n != "CPU pool"))
    crossover = next((b for b in batches if rates[path].get(b, 0) > rates["CPU pool"][b]), None)
    report.add(
        f"smallest batch where `{path}` beats the CPU pool",
        f"{crossover:,} rows" if crossover else "none measured",
        f"of {batches}",
    )
    best = max(rates, key=lambda n: max(rates[n].values(), default=0))
    top = max(rates[best], key=rates[best].get)
    report.add("best kernel rate", f"{rates[best][top] / 1e6:,.1f} M rows/s", f"{best}, batch {top:,}")


def parity(report: Report, folder: Path, x: np.ndarray, gpu: bool, epochs: int | None) -> None:
    """Scores and flags from the GPU against the CPU's: the synthetic rows, and the bundled
    tabular batch scored by a model trained on the bundled history (on this machine's GPU)."""
    provider = "cuda" if gpu else "cpu"
    cpu = Scorer.load(folder, provider="cpu")
    want = cpu.kernel().run(OUTPUTS[:1], x)[0]
    got = Scorer.load(folder, provider=provider).kernel().run(OUTPUTS[:1], x)[0]  # named: every batch there
    relative = np.abs(got - want) / np.maximum(np.abs(want), 1e-6)
    flags = int(((got > cpu.threshold) != (want > cpu.threshold)).sum())
    report.add(
        f"parity, {len(x):,} synthetic rows, {provider} vs CPU scores",
        f"max relative {relative.max():.1e}, max-norm relative {np.abs(got - want).max() / np.abs(want).max():.1e}",
        f"{'within' if relative.max() <= 1e-4 else 'outside'} 1e-4; flags differing: {flags}",
    )
    config = load_config(
        ROOT / "data" / "tabular.toml",
        name="gpu-bench-demo",
        train={"device": provider, "progress": False, "epochs": epochs},
    )
    demo = fit_model(ROOT / "data" / "tabular" / "history.csv", config, folder.parent.parent)
    batch = pl.read_csv(ROOT / "data" / "tabular" / "batch.csv")
    on_cpu = Scorer.load(demo.version_dir, provider="cpu").score(batch)
    on_gpu = Scorer.load(demo.version_dir, provider=provider).score(batch)
    differ = int((on_cpu["is_anomaly"] != on_gpu["is_anomaly"]).sum())
    worst = float((np.abs(on_gpu["score"] - on_cpu["score"]) / np.maximum(np.abs(on_cpu["score"]), 1e-6)).max())
    report.add(
        f"parity, bundled tabular batch ({batch.height:,} rows, model trained on {provider})",
        f"{int(on_gpu['is_anomaly'].sum())} vs {int(on_cpu['is_anomaly'].sum())} flagged; {differ} differ",
        f"max relative score difference {worst:.1e}",
    )


def end_to_end(report: Report, folder: Path, x: np.ndarray, root: Path, gpu: bool, copies: int) -> None:
    """`score_files` from Parquet to Parquet on the GPU and on the CPU, beside the rates of
    reading and preparing the same file alone and of writing its scores alone: the two
    stages that bound a GPU that scores faster than either."""
    source = root / "score.parquet"
    frame(np.concatenate([x] * copies)).write_parquet(source, row_group_size=131072)
    rows = len(x) * copies
    reader = Scorer.load(folder, provider="cpu")
    columns = reader.schema.source_columns
    read_rate = rows / timed(
        lambda: [reader.prepare(batch) for batch in ingest.iter_file_batches(source, columns, 65536)], min_seconds=0
    )
    report.add(
        f"end to end, {rows:,} rows: reading and preparing the Parquet file alone",
        f"{read_rate / 1e6:.2f} M rows/s",
        "one stage of `score_files`, alone",
    )
    output = root / "scores.parquet"
    score_files(Scorer.load(folder, provider="cpu"), source, output)
    scored = [pl.from_arrow(batch) for batch in pq.ParquetFile(output).iter_batches(65536)]
    before = rows / timed(lambda: pyarrow_before(root / "before.parquet", [s.to_arrow() for s in scored]), min_seconds=0)
    write_rate = rows / timed(lambda: write_scores(iter(scored), root / "written.parquet", ".parquet"), min_seconds=0)
    report.add(
        f"end to end, {rows:,} rows: writing the scores file alone (polars' sink, every core)",
        f"{write_rate / 1e6:.2f} M rows/s",
        f"{write_rate / read_rate:.2f} of reading; {write_rate / before:.2f}× the one-thread pyarrow writer before",
    )
    cpu_rate = None
    for provider, chunk in [("cpu", None)] + ([("cuda", 65536), ("cuda", None)] if gpu else []):
        scorer = Scorer.load(folder, provider=provider)
        rate = rows / timed(lambda: score_files(scorer, source, output, chunk_rows=chunk), min_seconds=0)
        cpu_rate = cpu_rate or rate
        rows_per_chunk = chunk or default_chunk_rows(scorer)
        report.add(
            f"end to end, {rows:,} rows Parquet → Parquet, `score_files` on {provider}, chunks of {rows_per_chunk:,}"
            f"{'' if chunk else ' (the default)'}",
            f"{rate / 1e6:.2f} M rows/s",
            f"{rate / read_rate:.2f} of reading; {rate / cpu_rate:.2f}× CPU",
        )


def by_cores(report: Report, folder: Path, x: np.ndarray, root: Path, gpu: bool, copies: int) -> None:
    """End to end at 1, 2, 4, 8 and 16 cores (as many as there are), each in a fresh process
    pinned to its cores (bench/scaling.py's child), with reading and writing alone beside it;
    then the GPU with every core. One round each: device time is short."""
    source = root / "by-cores.parquet"
    frame(np.concatenate([x] * copies)).write_parquet(source, row_group_size=131072)
    counts, scratch = core_counts(), root / "by-cores"
    scratch.mkdir(exist_ok=True)
    rates = {n: run_child(n, folder, source, scratch, "cpu") for n in counts}
    one = rates[1]["end to end"]
    for n, rate in rates.items():
        report.add(
            f"end to end by cores, CPU, {n} core(s)",
            f"{rate['end to end'] / 1e6:.2f} M rows/s",
            f"{rate['end to end'] / one:.2f}× 1 core ({rate['end to end'] / (n * one):.2f} of {n}× 1 core); "
            f"reading alone {rate['read'] / 1e6:.2f}, writing alone {rate['write'] / 1e6:.2f} M rows/s",
        )
    if gpu:
        top = counts[-1]
        on_gpu = run_child(top, folder, source, scratch, "cuda")
        report.add(
            f"end to end by cores, GPU with {top} cores",
            f"{on_gpu['end to end'] / 1e6:.2f} M rows/s",
            f"{on_gpu['end to end'] / on_gpu['read']:.2f} of reading alone (bar 0.8); "
            f"{on_gpu['end to end'] / rates[top]['end to end']:.2f}× the CPU at {top} cores",
        )


# -- the run ----------------------------------------------------------------------------------
def main(
    dry_run: bool = typer.Option(False, help="Tiny sizes on the CPU: checks the script, measures nothing."),
    output: Path = typer.Option(ROOT / "BENCHMARKS.md", help="Where the GPU section is written."),
    train_rows: int = 1_000_000,
    score_rows: int = 1_048_576,
    epochs: int = 100,
) -> None:
    gpu = torch.cuda.is_available() and CUDA in ort.get_available_providers() and not dry_run
    if not gpu and not dry_run:
        raise SystemExit("no CUDA GPU usable by both torch and onnxruntime here; use --dry-run to check the script.")
    if dry_run:
        train_rows, score_rows, epochs = 3_000, 20_000, 3
    started = time.perf_counter()
    device = "cuda" if gpu else "cpu"
    card = torch.cuda.get_device_name(0) if gpu else "none (dry run on the CPU)"
    batches = [b for b in (1, 64, 256, 1024, 4096, 8192, 65536, 262144, 1048576) if b <= score_rows]
    report = Report()
    with tempfile.TemporaryDirectory(prefix="vad-gpu-") as tmp:
        root = Path(tmp)
        x = synthetic_rows(train_rows)
        jobs = report.block("training jobs", training_jobs, x, device, root, epochs) or {}
        fp32 = jobs.get("fp32", {})
        report.block("training rates", training_rates, x, device, min(train_rows, 100_000), fp32.get("rate"))
        report.block("training batch quality", batch_quality, x, device, epochs)
        folder = fp32.get("folder")
        if folder is None:  # the jobs failed: a quick model on the CPU still lets scoring be measured
            folder = fit_model(
                root / "train.parquet",
                load_config(None, name="gpu-bench-fallback", train={"device": "cpu", "epochs": 2, "progress": False}),
                root / "models",
            ).version_dir
        x = synthetic_rows(score_rows, seed=1)
        report.block("scoring kernel", scoring_rates, folder, x, batches, gpu)
        report.block("parity", parity, folder, x, gpu, None if gpu else epochs)
        report.block("end to end", end_to_end, folder, x, root, gpu, 4 if gpu else 1)
        report.block("end to end by cores", by_cores, folder, x, root, gpu, 4 if gpu else 1)
    wall = time.perf_counter() - started
    table = Table(title=f"GPU: {card}")
    for column in ("what", "measured", "ratio or note"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        table.add_row(*row)
    Console(width=200).print(table)
    print(f"wall time {wall / 60:.1f} min")
    if not dry_run or output != ROOT / "BENCHMARKS.md":
        write_section(output, report.rows, wall, card, dry_run)


def write_section(path: Path, lines: list[Row], wall: float, card: str, dry_run: bool) -> None:
    """Replace the GPU section of `path` (between its markers) with this run's table."""
    rows = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in lines)
    cores = cpu_cores()
    section = f"""## GPU (issue 22)

Command: `python bench/gpu.py{" --dry-run" if dry_run else ""}` ({wall / 60:.1f} min). One run on one machine: GPU {card},
{cores} CPU cores; torch {torch.__version__}, onnxruntime {ort.__version__} (providers
{", ".join(p.replace("ExecutionProvider", "") for p in ort.get_available_providers())}), Python {platform.python_version()}.
Model: the library's default (5 members), 32 inputs, half of them skewed. Kernel rates are the
best of three timings; compare ratios within this table, not with the 2-core tables above.

| what | measured | ratio or note |
|---|---|---|
{rows}
"""
    replace_section(path, "gpu", section)


if __name__ == "__main__":
    typer.run(main)
