"""The optional int8 scorer: the fp32 scorer graph with its weight matrices quantised to int8
and its activations quantised per call (onnxruntime's dynamic quantisation). fp32 stays the
default; `bench/speed.py` reports the speed and the ROC-AUC change on the shared data."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from pipeline.artifact.contract import SCORE, SCORER_INT8


def quantize_scorer(fp32_path: Path, int8_path: Path) -> None:
    """Write the int8 twin of a scorer graph, with the same inputs, outputs and metadata
    (its `graph` entry renamed), so it is checked at load like every other graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    # It warns on the root logger about a pre-processing pass meant for image models: not ours.
    root.setLevel(max(level, logging.ERROR))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            quantised = Path(tmp) / "int8.onnx"
            # MatMuls only: by default Gather tables are quantised too (embeddings), and the input
            # map's lookup tables in int8 cost 32_shuttle 0.71 ROC-AUC (bench/speed.py).
            quantize_dynamic(fp32_path, quantised, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
            proto = onnx.load(str(quantised))
    finally:
        root.setLevel(level)
    del proto.metadata_props[:]
    for prop in onnx.load(str(fp32_path), load_external_data=False).metadata_props:
        proto.metadata_props.add(key=prop.key, value=SCORER_INT8 if prop.key == "graph" else prop.value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(int8_path))


def score_drift(fp32_path: Path, int8_path: Path, probe_raw: np.ndarray) -> dict[str, float]:
    """Median and largest relative change of the score, int8 against fp32, on a probe batch."""
    feeds = {"x": np.ascontiguousarray(probe_raw, dtype=np.float32)}
    fp32, int8 = (ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run([SCORE], feeds)[0]
                  for path in (fp32_path, int8_path))
    change = np.abs(int8 - fp32) / np.maximum(np.abs(fp32), 1e-6)
    return {"median_relative_change": float(np.median(change)), "max_relative_change": float(change.max())}
