"""Outputs appear whole or not at all, under names nobody can predict (pipeline.core.atomic)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.atomic import atomic_output
from pipeline.data.ingest import write_frame


def test_a_symlink_planted_at_the_old_temporary_name_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for planted in (".out.parquet.tmp", f".out.parquet.tmp-{os.getpid()}"):  # the names writers used
        (tmp_path / planted).symlink_to(victim)
    write_frame(pl.DataFrame({"a": [1, 2]}), tmp_path / "out.parquet")
    assert victim.read_text() == "keep me"
    assert pl.read_parquet(tmp_path / "out.parquet")["a"].to_list() == [1, 2]


def test_an_output_gets_an_ordinary_file_mode_not_the_temporarys_private_one(tmp_path: Path) -> None:
    with atomic_output(tmp_path / "out.txt") as temporary:
        assert stat.S_IMODE(temporary.stat().st_mode) == 0o600 and temporary.name.startswith(".out.txt.tmp-")
        temporary.write_text("whole")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_leaves_neither_output_nor_temporary(tmp_path: Path) -> None:
    (tmp_path / "out.txt").write_text("the previous version")
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.txt") as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    assert (tmp_path / "out.txt").read_text() == "the previous version"


def test_dead_writers_temporaries_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    dead, live = tmp_path / ".out.txt.tmp-999999999-abc", tmp_path / f".out.txt.tmp-{os.getpid()}-def"
    dead.write_text("killed half way")
    live.write_text("another thread of this process, still writing")
    with atomic_output(tmp_path / "out.txt") as temporary:
        temporary.write_text("whole")
    assert not dead.exists() and live.exists()


def test_the_file_and_its_folder_reach_the_disk_before_the_write_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger that records an output as written (after this returns) must never point at a
    file a power cut could take back: the file is fsynced before its rename, the folder after.
    os.fsync and os.replace are wrapped to note their order; they still run for real."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_output(tmp_path / "scores.parquet") as temporary:
        temporary.write_bytes(b"scores")
    assert len(events) == 3 and events[0].startswith(f"fsync {tmp_path}/.scores.parquet.tmp-")
    assert events[1:] == ["rename", f"fsync {tmp_path}"]
    assert (tmp_path / "scores.parquet").read_bytes() == b"scores"
