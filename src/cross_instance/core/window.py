"""A sliding one-minute count (this minute's count plus the unexpired share of the last one),
for showing usage; the limits themselves are enforced exactly by the GCRA buckets."""

from __future__ import annotations

from cross_instance.core.limiter import NS_PER_MINUTE


class SlidingCount:
    __slots__ = ("win", "cur", "prev")

    def __init__(self) -> None:
        self.win = 0
        self.cur = 0
        self.prev = 0

    def _roll(self, now_ns: int) -> None:
        win = now_ns // NS_PER_MINUTE
        if win != self.win:
            self.prev = self.cur if win == self.win + 1 else 0
            self.cur = 0
            self.win = win

    def add(self, now_ns: int, n: int = 1) -> None:
        self._roll(now_ns)
        self.cur += n

    def value(self, now_ns: int) -> int:
        self._roll(now_ns)
        frac = (now_ns % NS_PER_MINUTE) / NS_PER_MINUTE
        return round(self.cur + self.prev * (1.0 - frac))
