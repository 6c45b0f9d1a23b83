"""Execution providers and sessions: which of CUDA, TensorRT and the CPU to use, how a graph
is opened from checked bytes, and the check that a graph is the one the manifest describes."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import onnxruntime as ort

from pipeline.artifact.contract import ROW_GRAPHS
from pipeline.artifact.manifest import DIGEST_KEY, Manifest, digest_as_read
from pipeline.core.errors import ModelArtifactError, PipelineError

log = logging.getLogger(__name__)

Provider = Literal["auto", "cpu", "cuda", "tensorrt"]
NO_EXTERNAL_DATA = "/nonexistent/vad-refuses-external-data"
TENSORRT_CACHE = ".tensorrt-cache"  # inside the version folder; dot-named, so no manifest file
CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def _gpu_visible() -> bool:
    """A cheap check before asking onnxruntime for CUDA (it lists CUDA even with no GPU)."""
    if sys.platform == "linux":
        return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()
    return True


def select_providers(requested: Provider = "auto") -> list[str]:
    """Execution providers to try, in order; CPU always comes last as the fallback."""
    available = ort.get_available_providers()
    if requested == "cpu":
        return [CPU]
    if requested in ("cuda", "tensorrt"):
        wanted = CUDA if requested == "cuda" else TENSORRT
        if wanted not in available:
            raise PipelineError(
                f"provider '{requested}' was requested, but this onnxruntime offers {available}. "
                "Install onnxruntime-gpu, or use --provider cpu."
            )
        return [wanted, CUDA, CPU] if requested == "tensorrt" else [CUDA, CPU]
    if CUDA in available and _gpu_visible():
        return [CUDA, CPU]
    return [CPU]


BUILDS = ("onnxruntime", "onnxruntime-gpu")  # the distributions that install the `onnxruntime` package


def runtime_facts() -> dict:
    """Which onnxruntime build is active and what it offers: the check the `gpu` extra's swap
    is verified by (`vad runtime`). The two builds write one folder, so with both installed
    the active one is whichever was written last, and removing either breaks the other."""
    from importlib import metadata

    installed = {}
    for name in BUILDS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            installed[name] = metadata.version(name)
    offered = ort.get_available_providers()
    return {
        "active": "onnxruntime-gpu" if CUDA in offered else "onnxruntime",
        "version": ort.__version__,
        "installed": installed,
        "providers": offered,
        "usable": select_providers("auto"),
        "both_installed": len(installed) > 1,
    }


def provider_options(
    providers: list[str], cache_dir: Path | None = None, fp16: bool = False
) -> list[tuple[str, dict[str, str]]]:
    """(provider, options) pairs. TensorRT keeps its built engines in `cache_dir`, so a model
    pays the engine build (seconds to minutes) once, not at every load; `fp16` lets it run
    in half precision (its score change is measured in bench/gpu.py, not assumed)."""
    pairs: list[tuple[str, dict[str, str]]] = []
    for name in providers:
        options: dict[str, str] = {}
        if name == TENSORRT:
            options["trt_fp16_enable"] = "True" if fp16 else "False"
            if cache_dir is not None:
                options.update(
                    trt_engine_cache_enable="True",
                    trt_engine_cache_path=str(cache_dir),
                    trt_timing_cache_enable="True",
                    trt_timing_cache_path=str(cache_dir),
                )
        pairs.append((name, options))
    return pairs


def tensorrt_cache(folder: Path) -> Path | None:
    """The engine cache beside a model version, or None where the folder is read-only
    (engines are then rebuilt at each load, which is said once)."""
    cache = folder / TENSORRT_CACHE
    try:
        cache.mkdir(exist_ok=True)
    except OSError as exc:
        log.warning("TensorRT engine cache disabled: cannot create '%s' (%s).", cache, exc.strerror)
        return None
    return cache


def cpu_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def open_session(
    model: Path | bytes,
    requested: Provider = "auto",
    name: str = "model",
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> ort.InferenceSession:
    """An InferenceSession on the best working provider; says so when it falls back.
    `threads` sets onnxruntime's intra-op threads (None: its default, one per core);
    `cache_dir` holds TensorRT's engines when that provider is asked for."""
    providers = select_providers(requested)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: provider probing is reported by us, once
    # Weights stored outside the graph ("external data") would be read from a file no checksum
    # covers; exported graphs carry theirs inside. Point the lookup at nowhere, so a graph that
    # asks for external data fails to load on every onnxruntime (1.31 refuses it from bytes).
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", NO_EXTERNAL_DATA)
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    path = model if isinstance(model, Path) else name
    probing = io.StringIO()  # onnxruntime prints a failed provider's fallback on stdout: never into --json
    try:
        with quiet_probing(providers[0] != CPU), contextlib.redirect_stdout(probing):
            session = ort.InferenceSession(
                str(model) if isinstance(model, Path) else model,
                sess_options=options,
                providers=provider_options(providers, cache_dir),
            )
    except Exception as exc:
        _drop_unused_cache(cache_dir)
        reason = str(exc).strip().splitlines()[0]
        if "model_path must not be empty" in reason or NO_EXTERNAL_DATA in reason:
            reason = "it keeps weights outside the file (external data), which no checksum covers; re-export the model"
        raise ModelArtifactError(f"onnxruntime cannot load '{path}': {reason}") from exc
    if probing.getvalue().strip():
        log.debug("onnxruntime while probing providers: %s", probing.getvalue().strip())
    used = session.get_providers()
    if TENSORRT not in used:
        _drop_unused_cache(cache_dir)
    if providers[0] != CPU and providers[0] not in used:
        if requested != "auto":
            raise PipelineError(
                f"provider '{requested}' failed to start for '{path}' (got {used}); no GPU is usable. This "
                "onnxruntime-gpu needs the CUDA and cuDNN libraries it was built for (and TensorRT's, for "
                f"tensorrt); {VERBOSE_ENV}=1 shows onnxruntime's own log of what it could not load."
            )
        log.warning("CUDA provider is installed but not working; scoring on the CPU.")
    return session


VERBOSE_ENV = "VAD_ORT_VERBOSE"


def _drop_unused_cache(cache_dir: Path | None) -> None:
    """Remove the TensorRT cache folder made for a session that did not get TensorRT (an
    explicit request that failed left it empty in the version folder, whose files are hashed)."""
    if cache_dir is not None:
        with contextlib.suppress(OSError):  # not empty: engines of an earlier load stay
            cache_dir.rmdir()


@contextlib.contextmanager
def quiet_probing(probing: bool) -> Iterator[None]:
    """Silence onnxruntime's process-wide console log while a GPU provider is tried: a failed
    probe prints screens of library errors before our one-line reason. `VAD_ORT_VERBOSE=1`
    keeps them, for whoever is setting up CUDA."""
    if not probing or os.environ.get(VERBOSE_ENV) == "1":
        yield
        return
    ort.set_default_logger_severity(4)  # fatal only
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default: warnings


def check_graph(session: ort.InferenceSession, graph: str, manifest: Manifest, path: Path) -> None:
    """The graph's own metadata and signature must match its role in this manifest."""
    meta = session.get_modelmeta().custom_metadata_map
    found = {"graph": meta.get("graph"), "model_name": meta.get("model_name"), "created_at": meta.get("created_at")}
    wanted = {"graph": graph, "model_name": manifest.name, "created_at": manifest.created_at}
    io = {"inputs": [i.name for i in session.get_inputs()], "outputs": [o.name for o in session.get_outputs()]}
    if found != wanted or io != manifest.graphs.get(graph):
        raise ModelArtifactError(
            f"'{path}' is not this model's {graph} graph (it says {found}, {io}; the manifest expects {wanted}, "
            f"{manifest.graphs.get(graph)}). Files from different exports were mixed; re-export the model."
        )
    if "threshold" in meta and float(meta["threshold"]) != manifest.threshold.value:
        raise ModelArtifactError(
            f"'{path}' was exported with threshold {meta['threshold']}, but the manifest says "
            f"{manifest.threshold.value!r}: the manifest was edited. Re-fit thresholds with `vad threshold`."
        )
    if DIGEST_KEY in meta and meta[DIGEST_KEY] != digest_as_read(manifest):  # models before it have none
        raise ModelArtifactError(
            f"'{path}' was exported with another manifest than the one beside it (manifest_sha256 differs): the "
            "manifest was edited (a threshold, persistence, percentiles, drift reference, schema or lineage). "
            "Re-export the model, or re-fit its threshold with `vad threshold`."
        )
    takes_rows = graph in ROW_GRAPHS
    if takes_rows and session.get_inputs()[0].shape[1] != len(manifest.input_names):
        raise ModelArtifactError(
            f"'{path}' takes {session.get_inputs()[0].shape[1]} inputs; the manifest lists "
            f"{len(manifest.input_names)}. Re-export the model."
        )
