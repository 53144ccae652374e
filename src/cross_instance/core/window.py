"""A sliding one-minute count (this minute's count plus the unexpired share of the last one),
for showing usage and judging utilisation; the limits themselves are enforced exactly by the
GCRA buckets. The stores keep the same (window, current, previous) triple in their rows."""

from __future__ import annotations

from cross_instance.core.limiter import NS_PER_MINUTE


def windowed(win: int, cur: int, prev: int, now_ns: int) -> int:
    """Admissions in the last minute at ``now_ns``, from counts kept for minute ``win``
    (``cur``) and the minute before it (``prev``)."""
    this_win = now_ns // NS_PER_MINUTE
    if win == this_win - 1:
        cur, prev = 0, cur
    elif win != this_win:
        return 0
    frac = (now_ns % NS_PER_MINUTE) / NS_PER_MINUTE
    return round(cur + prev * (1.0 - frac))


class SlidingCount:
    __slots__ = ("cur", "prev", "win")

    def __init__(self) -> None:
        self.win = 0
        self.cur = 0
        self.prev = 0

    def add(self, now_ns: int, n: int = 1) -> None:
        win = now_ns // NS_PER_MINUTE
        if win != self.win:
            self.prev = self.cur if win == self.win + 1 else 0
            self.cur = 0
            self.win = win
        self.cur += n

    def value(self, now_ns: int) -> int:
        return windowed(self.win, self.cur, self.prev, now_ns)
