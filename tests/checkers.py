"""Checkers of recorded histories (FAULTS.md: pure functions, run after a scenario)."""

from __future__ import annotations


def most_at_once(spans: list[tuple[int, int]]) -> int:
    """The permits checker's sweep line: the most (start, end) spans open at one instant. At
    a tie an end comes before a start, so a slot handed over at the same instant counts once."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    held = most = 0
    for _, step in events:
        held += step
        most = max(most, held)
    return most
