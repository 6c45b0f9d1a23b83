"""What each install by role costs (issue 48), as a user installs it:

    python bench/installs.py          # prints the table, writes the "Installs" section of BENCHMARKS.md

Each role is `pip install` of a copy of this checkout into a fresh venv (`python -m venv`, pip
and setuptools included in the size), timed from the command line. Packages come from pip's
cache where it holds them, as on a machine that installed them before, so the times compare the
roles on this machine, not a network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from sections import markdown_blocks, print_blocks, replace_section  # noqa: E402

# torch is left out of `train`: its CPU wheel alone is about 750 MB, and the Makefile installs it.
ROLES = {"scoring (`pip install .`)": "", "report": "[report]", "flows": "[flows]"}
LEFT_OUT = ("torch", "onnx", "sklearn", "prefect", "dask", "matplotlib", "pyarrow")


def disk_mb(folder: Path) -> float:
    return sum(path.lstat().st_blocks * 512 for path in folder.rglob("*")) / 2**20


def install(source: Path, extra: str, base: Path) -> tuple[float, float, list[str]]:
    """(MB on disk, seconds, the left-out packages present) for one role."""
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    started = time.perf_counter()
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{source}{extra}"], check=True, capture_output=True)
    seconds = time.perf_counter() - started
    present = [
        name
        for name in LEFT_OUT
        if subprocess.run([str(python), "-c", f"import {name}"], capture_output=True).returncode == 0
    ]
    return disk_mb(venv), seconds, present


def main(write: bool = typer.Option(True, help="Write the Installs section of BENCHMARKS.md.")) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="vad-installs-") as tmp:
        source = Path(tmp) / "source"
        for part in ("pipeline", "flows"):
            shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
        for part in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / part, source / part)
        for role, extra in ROLES.items():
            size, seconds, present = install(source, extra, Path(tempfile.mkdtemp(dir=tmp)))
            rows.append((role, f"{size:.0f} MB, {seconds:.0f} s", "has " + (", ".join(present) or "none of the extras")))
    blocks = {"Installs by role (a fresh venv each; the bar for scoring: under 400 MB)": rows}
    print_blocks(blocks)
    if write:
        replace_section(
            ROOT / "BENCHMARKS.md",
            "installs",
            f"""## Installs by role (issue 48)

Command: `python bench/installs.py` (one run, 2 cores, packages from pip's cache). The
newcomer's scoring install before the split was 1.3 GB and 2 min 53 s.

{markdown_blocks(blocks)}
""",
        )


if __name__ == "__main__":
    typer.run(main)
