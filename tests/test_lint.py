"""The static checks `make lint` runs, proved able to fail: on a temporary copy of the code, a
deliberate `import torch` in a scoring module, a flow importing the CLI and the design
review's four one-line edits break the import contracts, and the untouched copy keeps them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The packages and the contracts, nothing else, in a folder of their own."""
    for folder in ("pipeline", "flows"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    """lint-imports on `folder`'s packages (PYTHONPATH first, so the copy is the one analysed)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=folder,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_the_untouched_code_keeps_every_contract(copy: Path) -> None:
    result = lint_imports(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


def test_importing_torch_in_a_runtime_module_breaks_the_build(copy: Path) -> None:
    kernel = copy / "pipeline" / "runtime" / "kernel.py"
    kernel.write_text(kernel.read_text() + "\nimport torch  # a deliberate violation\n")
    result = lint_imports(copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "pipeline.runtime.kernel -> torch" in result.stdout


def test_an_indirect_import_is_caught_too(copy: Path) -> None:
    """The scorer imports nothing new itself: the chain through a model module is followed."""
    files = copy / "pipeline" / "runtime" / "files.py"
    files.write_text(files.read_text() + "\nfrom pipeline.model import vae  # a deliberate violation\n")
    result = lint_imports(copy)
    assert result.returncode != 0
    assert "pipeline.runtime.files -> pipeline.model.vae" in result.stdout


def test_a_flow_importing_the_cli_breaks_the_layers(copy: Path) -> None:
    flow = copy / "flows" / "score.py"
    flow.write_text(flow.read_text() + "\nfrom pipeline import cli  # a deliberate violation\n")
    result = lint_imports(copy)
    assert result.returncode != 0
    assert "flows.score -> pipeline.cli" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "chain"),
    [
        ("flows/score.py", "from pipeline.training import fit", "flows.score -> pipeline.training.fit"),
        ("pipeline/training/fit.py", "from pipeline.ops import ledger", "pipeline.training.fit -> pipeline.ops.ledger"),
        ("pipeline/runtime/kernel.py", "import prefect", "pipeline.runtime.kernel -> prefect"),
        (
            "pipeline/model/train.py",
            "from pipeline.runtime import prefetch",
            "pipeline.model.train -> pipeline.runtime.prefetch",
        ),
    ],
    ids=["scoring-flow-imports-training", "training-imports-ops", "runtime-imports-prefect", "model-imports-runtime"],
)
def test_the_design_reviews_four_edits_break_a_contract(copy: Path, module: str, line: str, chain: str) -> None:
    """Each edit broke a rule the packages' docstrings state and passed `make lint` before
    (../shared/reviews/design.md): a scoring flow loading the trainer, siblings importing
    each other, Prefect below the operations layer."""
    path = copy / module
    path.write_text(path.read_text() + f"\n{line}  # a deliberate violation\n")
    result = lint_imports(copy)
    assert result.returncode != 0 and "BROKEN" in result.stdout
    assert chain in result.stdout, result.stdout[-2000:]
