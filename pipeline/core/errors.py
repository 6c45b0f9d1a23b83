"""Project exceptions. Every one derives from ValueError so callers can catch bad input
the scikit-learn way; the CLI prints their message as one line and exits non-zero."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from rich.console import Console


class PipelineError(ValueError):
    """Base class: the message says what was expected, what was found, and where."""


class DataError(PipelineError):
    """Input data cannot be read or does not hold valid values (file, column, row named)."""


class SchemaError(DataError):
    """Input columns do not match the schema the model was trained on."""


class ModelArtifactError(PipelineError):
    """An exported model folder is incomplete, tampered with or from an unknown schema."""


class ExportParityError(PipelineError):
    """The ONNX graphs do not reproduce the PyTorch model within tolerance."""


def where(file: str | None = None, column: str | None = None, row: int | None = None) -> str:
    """Format a location as " (file 'x', column 'y', row 3)" from the parts that are known,
    or "" when none is. Rows are counted from 1 over data rows (a CSV header is not a row)."""
    parts = []
    if file is not None:
        parts.append(f"file '{file}'")
    if column is not None:
        parts.append(f"column '{column}'")
    if row is not None:
        parts.append(f"row {row}")
    return f" ({', '.join(parts)})" if parts else ""


def exit_on_user_error(run: Callable[[], object], as_json: bool = False) -> None:
    """Run a command; errors the user can fix become one line on stderr and exit status 2:
    bad input, and the environment's (a missing or unwritable path, a full disk). The CLI and
    the flows' command lines share it. With `as_json` (a command run with --json) the error is
    also one JSON object on stdout, `{"error": message, "kind": class name}`, for the script
    that reads it (newcomer review N18: stdout was empty)."""
    try:
        run()
    except (PipelineError, OSError) as exc:
        Console(stderr=True).print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        if as_json:
            print(json.dumps({"error": str(exc), "kind": type(exc).__name__}), flush=True)
        sys.exit(2)
