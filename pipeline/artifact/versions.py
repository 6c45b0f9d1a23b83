"""A model's versions and the decisions about them: which version each came from and what
it was trained on (every manifest's `lineage` and `training_data`), and the promotion
decisions, kept beside the versions in `decisions.jsonl` (the manifests are immutable)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pipeline.artifact.manifest import LATEST, Manifest, read_manifest
from pipeline.core.atomic import atomic_output

DECISIONS = "decisions.jsonl"


def list_versions(model_root: Path) -> list[Manifest]:
    """Every published version's manifest, oldest first (files not re-hashed: a listing)."""
    folders = sorted((p for p in model_root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    return [read_manifest(folder, verify=False) for folder in folders]


def latest_version(model_root: Path) -> str | None:
    pointer = model_root / LATEST
    return pointer.read_text().strip() if pointer.is_file() else None


def record_decision(model_root: Path, version: str, promoted: bool, reasons: list[str], comparison: dict) -> dict:
    """Append a promotion decision about `version` (the whole log is rewritten atomically, so
    a crash leaves the old log or the new one)."""
    decision = {"version": version, "decision": "promoted" if promoted else "rejected", "reasons": reasons,
                "comparison": comparison, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    path = model_root / DECISIONS
    kept = path.read_text() if path.is_file() else ""
    with atomic_output(path) as temporary:
        temporary.write_text(kept + json.dumps(decision, sort_keys=True) + "\n")
    return decision


def read_decisions(model_root: Path) -> dict[str, dict]:
    """The last decision about each version."""
    path = model_root / DECISIONS
    lines = path.read_text().splitlines() if path.is_file() else []
    return {d["version"]: d for d in (json.loads(line) for line in lines if line.strip())}
