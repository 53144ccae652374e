"""The sliding one-minute estimate shared by the stores and the runtime."""

from cross_instance.core.limiter import NS_PER_MINUTE as M
from cross_instance.core.window import SlidingCount, windowed


def test_windowed_counts_this_and_the_unexpired_part_of_the_last_minute():
    now = 100 * M + M // 4  # a quarter into minute 100
    assert windowed(100, 2, 4, now) == 5  # 2 + 4 * 0.75
    assert windowed(99, 8, 0, now) == 6  # last minute's 8, three quarters still inside
    assert windowed(98, 8, 8, now) == 0
    assert windowed(100, 1, 1, 100 * M + 1) == 2  # just after a boundary: rounded, not cut


def test_sliding_count_rolls_over_minutes():
    c = SlidingCount()
    c.add(5 * M + 1, 3)
    c.add(6 * M + 1, 1)
    assert c.value(6 * M + M // 2) == 2  # 1 + 3 * 0.5 = 2.5, rounded half to even
    assert c.value(8 * M) == 0
