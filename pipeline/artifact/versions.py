"""A model's versions and the decisions about them: which version each came from and what
it was trained on (every manifest's `lineage` and `training_data`), and the promotion
decisions, kept beside the versions in `decisions.jsonl` (the manifests are immutable)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.artifact.manifest import LATEST, MANIFEST, Manifest, read_manifest
from pipeline.core.atomic import atomic_output

DECISIONS = "decisions.jsonl"
log = logging.getLogger(__name__)


def list_versions(model_root: Path) -> list[Manifest]:
    """Every published version's manifest, oldest first (files not re-hashed: a listing). A
    numbered folder without a manifest (half deleted) is named in the log and left out, not
    allowed to hide every other version (reliability review N19)."""
    folders = sorted((p for p in model_root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    listed = []
    for folder in folders:
        if not (folder / MANIFEST).is_file():
            log.warning("version folder '%s' has no %s: not a version (half deleted?), left out.", folder, MANIFEST)
            continue
        listed.append(read_manifest(folder, verify=False))
    return listed


def latest_version(model_root: Path) -> str | None:
    pointer = model_root / LATEST
    return pointer.read_text().strip() if pointer.is_file() else None


class Decision(BaseModel):
    """A promotion decision about one version: one line of `decisions.jsonl`."""

    model_config = ConfigDict(frozen=True)

    version: str
    decision: Literal["promoted", "rejected"]
    reasons: list[str]  # "PASS: …" / "FAIL: …", one per rule
    comparison: dict[str, Any]  # the champion's version and both models' figures on held-out rows
    at: str  # ISO time, UTC

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"


def record_decision(
    model_root: Path, version: str, promoted: bool, reasons: list[str], comparison: dict[str, Any]
) -> Decision:
    """Append a promotion decision about `version` (the whole log is rewritten atomically, so
    a crash leaves the old log or the new one; a torn line an older writer left is not copied)."""
    decision = Decision(
        version=version,
        decision="promoted" if promoted else "rejected",
        reasons=reasons,
        comparison=comparison,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    path = model_root / DECISIONS
    kept = "".join(d.model_dump_json() + "\n" for d in _decision_lines(path))
    with atomic_output(path) as temporary:
        temporary.write_text(kept + decision.model_dump_json() + "\n")
    return decision


def read_decisions(model_root: Path) -> dict[str, Decision]:
    """The last decision about each version."""
    return {d.version: d for d in _decision_lines(model_root / DECISIONS)}


def _decision_lines(path: Path) -> list[Decision]:
    """The log's readable decisions; a line that is not one (torn by a crash of a writer that
    appended in place) is named in the log and skipped (reliability review N18)."""
    decisions = []
    for number, line in enumerate(path.read_text().splitlines() if path.is_file() else [], start=1):
        if not line.strip():
            continue
        try:
            decisions.append(Decision.model_validate_json(line))
        except ValidationError:
            log.warning("'%s' line %d is not a decision (torn?): skipped.", path, number)
    return decisions
