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
            folded, plain, quantised = (Path(tmp) / f"{stage}.onnx" for stage in ("folded", "plain", "int8"))
            _fold_constants(fp32_path, folded)
            fp32 = onnx.load(str(folded))
            _gemm_as_matmul(fp32.graph)
            onnx.save(fp32, str(plain))
            # MatMuls only: by default Gather tables are quantised too (embeddings), and the input
            # map's lookup tables in int8 cost 32_shuttle 0.71 ROC-AUC (bench/speed.py). The
            # map's 0/1 column pickers stay float too: they carry raw values, unbounded.
            pickers = {t.name for t in fp32.graph.initializer if _is_selection(onnx.numpy_helper.to_array(t))}
            keep_float = [
                node.name
                for node in fp32.graph.node
                if node.op_type == "MatMul" and any(name in pickers for name in node.input)
            ]
            quantize_dynamic(
                plain, quantised, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], nodes_to_exclude=keep_float
            )
            proto = onnx.load(str(quantised))
    finally:
        root.setLevel(level)
    del proto.metadata_props[:]
    for prop in onnx.load(str(fp32_path), load_external_data=False).metadata_props:
        proto.metadata_props.add(key=prop.key, value=SCORER_INT8 if prop.key == "graph" else prop.value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(int8_path))


def _fold_constants(source: Path, target: Path) -> None:
    """The graph with its constant subgraphs computed (onnxruntime's basic level). Without
    it, the dynamo exporter's graph of a default model kept 20 of its 30 weight matrices
    behind nodes the quantiser does not look through, and they stayed float
    (tests/test_quantize.py)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def _is_selection(values: np.ndarray) -> bool:
    """A 0/1 matrix with one 1 per column: it picks inputs, it does not weigh them."""
    return values.ndim == 2 and bool(np.isin(values, (0.0, 1.0)).all()) and bool((values.sum(0) == 1).all())


def _gemm_as_matmul(graph: onnx.GraphProto) -> None:
    """Rewrite each plain Gemm (no transposes, alpha = beta = 1: what torch's addmm exports)
    as MatMul + Add, the form onnxruntime's dynamic quantisation knows (it has no Gemm)."""
    nodes = []
    for index, node in enumerate(graph.node):
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "Gemm"
            or len(node.input) != 3
            or attributes.get("transA", 0)
            or attributes.get("transB", 0)
            or attributes.get("alpha", 1.0) != 1.0
            or attributes.get("beta", 1.0) != 1.0
        ):
            nodes.append(node)
            continue
        name = node.name or f"gemm_{index}"  # unnamed nodes would otherwise share one product's name
        product = f"{name}/product"
        nodes.append(onnx.helper.make_node("MatMul", list(node.input[:2]), [product], name=f"{name}/MatMul"))
        nodes.append(onnx.helper.make_node("Add", [product, node.input[2]], list(node.output), name=f"{name}/Add"))
    del graph.node[:]
    graph.node.extend(nodes)


def score_drift(fp32_path: Path, int8_path: Path, probe_raw: np.ndarray) -> dict[str, float]:
    """Median and largest relative change of the score, int8 against fp32, on a probe batch."""
    feeds = {"x": np.ascontiguousarray(probe_raw, dtype=np.float32)}
    fp32, int8 = (
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run([SCORE], feeds)[0]
        for path in (fp32_path, int8_path)
    )
    change = np.abs(int8 - fp32) / np.maximum(np.abs(fp32), 1e-6)
    return {"median_relative_change": float(np.median(change)), "max_relative_change": float(change.max())}
