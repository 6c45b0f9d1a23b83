"""The scorer graph run over row chunks by a pool of sessions: one per core on the CPU, one
GPU session for large batches when a GPU is there."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline.runtime.providers import CPU, Provider, cpu_cores, open_session, select_providers

# The scorer on the CPU: one single-threaded session per core, each scoring its own chunks of
# CPU_CHUNK rows, was 1.5× faster than one session splitting every operator over both cores
# (no barrier per operator), and 2,048 rows was the best chunk (BENCHMARKS.md, bench/speed.py).
CPU_CHUNK = 2048
GPU_CHUNK = 262144
# With `auto`, a batch goes to the GPU only from this many rows: below it, launches and copies
# cost more than the CPU pool's arithmetic (bench/gpu.py measures where the curves cross;
# BENCHMARKS.md, "GPU"). An explicit `cuda` or `tensorrt` sends every batch to the GPU.
GPU_MIN_ROWS = 1024


class KernelPool:
    """The scorer graph run over row chunks. On the CPU, one single-threaded session per core,
    each taking its own chunks; a batch of one chunk or less runs in the caller's thread (no
    hand-off: batch-1 latency). With a GPU, one GPU session takes large chunks: every batch when
    the GPU was asked for by name, and under `auto` only batches of `gpu_min_rows` or more,
    the rest going to the CPU sessions, which are faster there (bench/gpu.py)."""

    def __init__(self, model: bytes, provider: Provider, name: str, cache_dir: Path | None = None) -> None:
        self.gpu: ort.InferenceSession | None = None
        if select_providers(provider)[0] != CPU:
            session = open_session(model, provider, name, threads=1, cache_dir=cache_dir)  # CPU threads only feed it
            if session.get_providers()[0] != CPU:
                self.gpu = session
        self.gpu_min_rows = GPU_MIN_ROWS if provider == "auto" else 0
        workers = 0 if self.gpu is not None and self.gpu_min_rows == 0 else cpu_cores()
        self.cpu = [open_session(model, "cpu", name, threads=1) for _ in range(workers)]
        outputs = (self.gpu or self.cpu[0]).get_outputs()
        self.top_k = int(outputs[-1].shape[1]) if outputs[-1].name == "top_share" else 0
        self.chunk, self.gpu_chunk = CPU_CHUNK, GPU_CHUNK
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="vad-score") if workers > 1 else None
        self._local = threading.local()
        self._next = itertools.count(1)  # pool threads take sessions 1, 2, …; the caller's is 0

    @property
    def sessions(self) -> list[ort.InferenceSession]:
        """Every session this pool opened: the GPU's first, then the CPU's."""
        return ([self.gpu] if self.gpu is not None else []) + self.cpu

    def describe(self) -> str:
        """Where batches run, for people: the provider, and the GPU's batch floor under auto."""
        if self.gpu is None:
            return CPU
        if not self.cpu:
            return self.gpu.get_providers()[0]
        return f"{self.gpu.get_providers()[0]} (batches of {self.gpu_min_rows:,}+ rows; smaller ones on {CPU})"

    def on_gpu(self, rows: int) -> bool:
        """Whether a batch of `rows` goes to the GPU session."""
        return self.gpu is not None and (not self.cpu or rows >= self.gpu_min_rows)

    def _session(self) -> ort.InferenceSession:
        if not hasattr(self._local, "index"):
            self._local.index = next(self._next) % len(self.cpu)
        return self.cpu[self._local.index]

    def run(self, outputs: list[str], x: np.ndarray) -> list[np.ndarray]:
        """The named outputs for all rows of `x` (C-contiguous float32), chunk results joined."""
        if len(x) == 0:  # the graph cannot broadcast over zero rows: answer with empty outputs
            return empty_outputs((self.gpu or self.cpu[0]), outputs)
        on_gpu = self.on_gpu(len(x))
        chunk = self.gpu_chunk if on_gpu else self.chunk
        starts = range(0, len(x), chunk)
        if on_gpu and self.gpu is not None:
            parts = [self.gpu.run(outputs, {"x": x[i : i + chunk]}) for i in starts]
        elif self._pool is None or len(x) <= chunk:
            parts = [self.cpu[0].run(outputs, {"x": x[i : i + chunk]}) for i in starts]
        else:
            parts = list(self._pool.map(lambda i: self._session().run(outputs, {"x": x[i : i + chunk]}), starts))
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(outputs))]


def empty_outputs(session: ort.InferenceSession, names: list[str]) -> list[np.ndarray]:
    """The named outputs for zero rows, shaped and typed as the graph declares them."""
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}
    declared = {o.name: o for o in session.get_outputs()}
    return [
        np.zeros([0, *[d if isinstance(d, int) else 0 for d in declared[n].shape[1:]]], types[declared[n].type])
        for n in names
    ]
