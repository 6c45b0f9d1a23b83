"""Alarms: the onsets of anomalous episodes."""

from __future__ import annotations

import numpy as np

from pipeline.runtime.scorer import onsets


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


def test_the_hold_off_carries_across_batches_as_if_the_series_were_one() -> None:
    """Cut a series anywhere into batches, each starting from the rows-since-last-alarm the one
    before left: the alarms are those of the whole series."""
    rng = np.random.default_rng(0)
    flags = rng.random(500) < 0.05
    whole, (left,) = onsets(flags, [(0, 500)], hold_off=37)
    for cuts in ([120, 121, 300], [1, 250, 499], [37, 74, 111]):
        since, pieces = None, []
        for start, stop in zip([0, *cuts], [*cuts, 500], strict=True):
            alarms, (since,) = onsets(flags[start:stop], [(0, stop - start)], 37, [since])
            pieces.append(alarms)
        assert (np.concatenate(pieces) == whole).all() and since == left
    assert onsets(np.zeros(5, bool), [(0, 5)], 3, [None])[1] == [None]  # no alarm yet: nothing to carry
    assert onsets(np.zeros(5, bool), [(0, 5)], 3, [2])[1] == [7]
