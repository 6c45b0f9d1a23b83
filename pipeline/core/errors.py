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


# Which extra brings a package a scoring-only install (`pip install vae-pipeline`) leaves out.
EXTRA_OF = {
    **dict.fromkeys(("torch", "onnx", "onnxscript", "sklearn", "scipy", "tqdm"), "train"),
    **dict.fromkeys(("prefect", "prefect_dask", "dask", "distributed", "pyarrow"), "flows"),
    "matplotlib": "report",
}
EXTRA_DOES = {
    "train": "training and export",
    "flows": "the Prefect flows, the Dask cluster and their plots",
    "report": "the scoring report's plots",
}


def missing_extra(exc: ModuleNotFoundError) -> PipelineError | None:
    """A package an extra brings, said as the extra to install; None for any other (newcomer
    review, point 6: the scoring install leaves Prefect, Dask, plotting and torch out)."""
    extra = EXTRA_OF.get((exc.name or "").split(".")[0])
    if extra is None:
        return None
    return PipelineError(
        f"this needs '{exc.name}', which comes with {EXTRA_DOES[extra]}: install the extra, "
        f"pip install 'vae-pipeline[{extra}]' (scoring needs none of it)."
    )


def exit_on_user_error(run: Callable[[], object], as_json: bool = False) -> None:
    """Run a command; errors the user can fix become one line on stderr and exit status 2:
    bad input, and the environment's (a missing or unwritable path, a full disk). The CLI and
    the flows' command lines share it. With `as_json` (a command run with --json) the error is
    also one JSON object on stdout, `{"error": message, "kind": class name}`, for the script
    that reads it (newcomer review N18: stdout was empty). A package of an extra that is not
    installed is said as the extra to install."""
    try:
        try:
            run()
        except ModuleNotFoundError as missing:  # an extra not installed: what to install, not a traceback
            raise missing_extra(missing) or missing from None
    except (PipelineError, OSError) as exc:
        Console(stderr=True).print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        if as_json:
            print(json.dumps({"error": str(exc), "kind": type(exc).__name__}), flush=True)
        sys.exit(2)
