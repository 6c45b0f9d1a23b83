"""bench/gpu.py's dry run: the GPU benchmark's own code, at tiny sizes on the CPU provider, so
the script is known to work before a GPU machine is lent (issue 22)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from common import ROOT


@pytest.mark.slow
def test_gpu_bench_dry_run_measures_every_block(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\n<!-- gpu:start -->\nold figures\n<!-- gpu:end -->\n\n## After\n")
    done = subprocess.run(
        [sys.executable, "bench/gpu.py", "--dry-run", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "failed:" not in done.stdout, done.stdout[-3000:]
    text = output.read_text()
    assert "old figures" not in text and text.count("<!-- gpu:start -->") == 1 and text.endswith("## After\n")
    for row in (
        "`vad train` job on cpu, fp32",
        "validation objective (negative β-ELBO), bf16 vs fp32",
        "training on cpu to early stopping",
        "kernel, CPU pool, batch 1 ",
        "kernel, CPU, IO binding",
        "parity, bundled tabular batch",
        "writing the scores file alone",
        "`score_files` on cpu",
        "end to end by cores, CPU, 1 core(s)",
    ):
        assert row in text, row
    assert "python bench/gpu.py --dry-run" in text
