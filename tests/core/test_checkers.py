"""The history checkers find what they are for, on hand-made histories."""

from tests.checkers import most_at_once


def test_the_sweep_line_counts_overlaps_and_not_hand_overs():
    assert most_at_once([]) == 0
    assert most_at_once([(0, 10), (10, 20), (20, 30)]) == 1  # handed over at the instant
    assert most_at_once([(0, 10), (5, 15), (9, 20)]) == 3  # a violation of a cap of 2
    assert most_at_once([(0, 100), (1, 2), (3, 4), (5, 6)]) == 2
