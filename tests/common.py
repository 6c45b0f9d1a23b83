"""Paths and settings the test modules share (importable as `common`; a `conftest` import
would be ambiguous, since tests/flows has its own conftest)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
FAST_TRAIN = {"epochs": 6, "patience": 3, "progress": False}
