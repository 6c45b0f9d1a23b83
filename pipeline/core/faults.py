"""Crashes and faults: fail points for the crash and full-disk tests, which failures are the
machine's rather than the batch's, and the liveness check recovery relies on.

Fail points: `VAD_CRASH_AT=<point>` makes this process kill itself
(SIGKILL, no clean-up, like a power cut or the OOM killer) when it reaches that point;
`<point>@<file name>` only while that file is there (the read point names its file).

Unset in production, each point costs one dictionary lookup. The points, in the order a
scoring run passes them (`FAIL_POINTS`), are documented in docs/reliability.md."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
from pathlib import Path

CRASH_ENV = "VAD_CRASH_AT"
FAIL_POINTS = (
    "read",  # a batch's first chunk is read, nothing scored yet
    "score",  # the first chunk is scored, nothing written yet
    "write",  # the first chunk is in the temporary output file (no footer yet), not renamed into place
    "scored",  # the output is in place; no alert raised yet
    "alerted",  # the alert is recorded in the ledger; no sink has it yet
    "sent",  # a sink accepted the alert; the ledger has not recorded the delivery
    "delivered",  # every sink has the alert; the batch is not yet marked done
    "export",  # an export's graphs are written to its staging folder, not yet published
)


FULL_ENV = "VAD_FULL_DISK_AT"  # a fail point's name: raise "no space left on device" there, once per run


def full_disk_point(name: str) -> None:
    """Fail here as a full disk does (ENOSPC) when the environment asks for it (tests only)."""
    if os.environ.get(FULL_ENV) == name:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# Failures from outside the batch: the same bytes will score once the disk, the network or
# the machine recovers, so the batch is retried by the next run instead of set aside.
TRANSIENT_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EIO,
    errno.EAGAIN,
    errno.EBUSY,
    errno.ETIMEDOUT,
    errno.ENOMEM,
    errno.EMFILE,
    errno.ENFILE,
    errno.ESTALE,
}


# SQLite's own codes for the same faults (it raises OperationalError, never OSError): a full
# disk, a lock held past the busy timeout, an I/O error (the low byte of an extended code).
TRANSIENT_SQLITE = {
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_PROTOCOL,
}


def is_transient(error: BaseException) -> bool:
    """Whether a failure is the machine's (retry the batch later), not the batch's own."""
    if isinstance(error, (TimeoutError, ConnectionError, MemoryError)):
        return True
    if isinstance(error, sqlite3.OperationalError):
        return (getattr(error, "sqlite_errorcode", 0) & 0xFF) in TRANSIENT_SQLITE
    return isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS


def crash_point(name: str, file: str | Path | None = None) -> None:
    """Kill this process here when the environment asks for it (tests only). `point@name`
    kills only while the file of that name is at the point: a batch that kills every process
    scoring it (the out-of-memory killer on one large batch) while the others score."""
    point, _, only = os.environ.get(CRASH_ENV, "").partition("@")
    if point == name and (not only or (file is not None and Path(file).name == only)):
        os.kill(os.getpid(), signal.SIGKILL)


def process_start(pid: int) -> int | None:
    """When the process started (clock ticks since boot, Linux's /proc), or None where that
    cannot be read: with the pid, it names one process, so a reused pid is told apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name before ")" may hold spaces


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (a crashed run's pid is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
