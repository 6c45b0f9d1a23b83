"""Alarms: the onsets of anomalous episodes."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pytest

from pipeline.runtime.steps import onsets, time_seconds


def flags_at(rows: int, *flagged: int) -> np.ndarray:
    flags = np.zeros(rows, bool)
    flags[list(flagged)] = True
    return flags


def test_an_episode_alarms_once_at_its_onset() -> None:
    flags = flags_at(30, *range(5, 15))
    assert np.flatnonzero(onsets(flags, [(0, 30)], hold_off=20)[0]).tolist() == [5]


def test_a_flag_after_the_hold_off_alarms_again_and_one_inside_it_does_not() -> None:
    flags = flags_at(40, 2, 3, 12, 13, 25)
    assert np.flatnonzero(onsets(flags, [(0, 40)], hold_off=10)[0]).tolist() == [2, 13, 25]
    assert np.flatnonzero(onsets(flags, [(0, 40)], hold_off=0)[0]).tolist() == [2, 3, 12, 13, 25]


def test_each_entity_has_its_own_hold_off() -> None:
    flags = flags_at(20, 8, 9, 10, 11)  # rows 0-9 one machine, 10-19 the next
    assert np.flatnonzero(onsets(flags, [(0, 10), (10, 20)], hold_off=100)[0]).tolist() == [8, 10]


def test_an_episode_ends_after_quiet_rows_and_a_drift_that_keeps_flagging_alarms_once() -> None:
    drifting = flags_at(100, *range(10, 100, 3))  # a flag every third row, for ever
    assert np.flatnonzero(onsets(drifting, [(0, 100)], hold_off=20)[0]).tolist() == [10, 31, 52, 73, 94]
    assert np.flatnonzero(onsets(drifting, [(0, 100)], hold_off=20, quiet=5)[0]).tolist() == [10]
    two = flags_at(100, 10, 12, 50, 52)  # two episodes, 38 quiet rows apart
    assert np.flatnonzero(onsets(two, [(0, 100)], hold_off=20, quiet=30)[0]).tolist() == [10, 50]
    assert np.flatnonzero(onsets(two, [(0, 100)], hold_off=20, quiet=40)[0]).tolist() == [10]


@pytest.mark.parametrize(("hold_off", "quiet"), [(37, 0), (37, 9), (0, 9), (5, 60)])
def test_the_alarm_rule_carries_across_batches_as_if_the_series_were_one(hold_off: int, quiet: int) -> None:
    """Cut a series anywhere into batches, each starting from the state the one before left:
    the alarms are those of the whole series."""
    rng = np.random.default_rng(0)
    flags = rng.random(500) < 0.05
    whole, (left,) = onsets(flags, [(0, 500)], hold_off, quiet)
    for cuts in ([120, 121, 300], [1, 250, 499], [37, 74, 111]):
        since, pieces = (None, None), []
        for start, stop in zip([0, *cuts], [*cuts, 500], strict=True):
            alarms, (since,) = onsets(flags[start:stop], [(0, stop - start)], hold_off, quiet, [since])
            pieces.append(alarms)
        assert (np.concatenate(pieces) == whole).all() and since == left
    assert onsets(np.zeros(5, bool), [(0, 5)], 3, 0, [(None, None)])[1] == [(None, None)]  # nothing to carry
    assert onsets(np.zeros(5, bool), [(0, 5)], 3, 0, [(2, 1)])[1] == [(7, 6)]


def test_time_seconds_reads_datetimes_and_numeric_clocks() -> None:
    minutes = pl.Series([datetime(2026, 1, 1, 10, 30), datetime(2026, 1, 1, 10, 35)])
    assert np.diff(time_seconds(minutes)).tolist() == [300.0]
    assert time_seconds(pl.Series([3.5, 4.0])).tolist() == [3.5, 4.0]  # a numeric clock as it is
