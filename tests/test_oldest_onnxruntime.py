"""The oldest onnxruntime the README promises (1.18.0; the graphs are ONNX IR version 9, opset 20)
loads every exported graph and gives the scorer's scores (with the dynamo exporter's IR 10,
1.17 refused them, measured once by hand; 1.18.0 stays the promise).
The test builds its own small venv with that release from the package index."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.runtime import Scorer

OLDEST = "1.18.0"
pytestmark = pytest.mark.slow

CHECK = """
import json, sys
import numpy as np, onnxruntime as ort
folder, rows = sys.argv[1], np.load(sys.argv[2])
graphs = {g: ort.InferenceSession(f"{folder}/{g}.onnx", providers=["CPUExecutionProvider"])
          for g in ("encoder", "decoder", "scorer", "scorer_sampled")}
print(json.dumps({"version": ort.__version__, "scores": graphs["scorer"].run(["score"], {"x": rows})[0].tolist()}))
"""


def test_oldest_supported_onnxruntime_loads_the_graphs_and_scores_the_same(tabular_model: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"onnxruntime=={OLDEST}", "numpy<2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if install.returncode != 0:
        pytest.skip(f"onnxruntime=={OLDEST} cannot be installed here: {install.stderr.strip()[-300:]}")
    scorer = Scorer.load(tabular_model)
    rows = np.tile(np.asarray(scorer.manifest.scaler.mean, np.float32), (4, 1))
    rows[1:] *= np.float32([[0.5], [1.5], [3.0]])
    np.save(tmp_path / "rows.npy", rows)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK, str(tabular_model), str(tmp_path / "rows.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    old = json.loads(result.stdout)
    assert old["version"] == OLDEST
    np.testing.assert_allclose(old["scores"], scorer.score_array(rows).score, rtol=1e-5)
