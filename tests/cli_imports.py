"""`vad` starts without torch, onnx, onnxscript or scikit-learn: its scoring commands run on
a scoring-only install, and its training commands import them when they run. import-linter
sees the CLI's lazy imports of the training package as imports, so it cannot hold this; this
check imports the CLI and looks (`make lint` runs it; tests/test_lint.py proves it can fail)."""

from __future__ import annotations

import sys

TRAINING_ONLY = ("torch", "onnx", "onnxscript", "sklearn")


def loaded_at_start() -> list[str]:
    import pipeline.cli  # noqa: F401 - imported for what it loads

    return sorted({name.split(".")[0] for name in sys.modules} & set(TRAINING_ONLY))


if __name__ == "__main__":
    loaded = loaded_at_start()
    if loaded:
        names = ", ".join(loaded)
        sys.exit(f"pipeline/cli.py loads {names} when `vad` starts: import them inside the command that needs them.")
