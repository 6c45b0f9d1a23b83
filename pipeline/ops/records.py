"""The records that travel between the inbox, the ledger and the flows, typed: a batch found
in the inbox and the summary of its scoring. Frozen pydantic models, so a flow task hands
Prefect plain JSON (`model_dump()`) and gets the same record back (`model_validate`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Batch(BaseModel):
    """A file in the inbox, named by the sha256 of its bytes. `size` and `mtime_ns` describe
    the file as it was hashed; scoring refuses a file changed since (-1: not recorded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    identity: str
    size: int = -1
    mtime_ns: int = -1


class BatchSummary(BaseModel):
    """What scoring one batch produced: its scores file and the counts an operator reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    output: str
    rows: int
    anomalies: int
    threshold: float
    inputs: str  # the input repairs, in words (InputReport.summary)
