"""A wall-clock jump of an hour, forward and back, inside an instance process (FAULTS.md F9):
the SQLite store keeps leases and rate windows on the host's boot-time clock, so no lease
expires early or late and every window admits at most ``burst + rate * W``.

The jump is real for this process (``time-machine`` moves ``time.time``, ``datetime`` and the
realtime clock, not the monotonic or boot-time ones); times are read with the store's own clock
(``store.now_ns()``), whichever host clock it is built on."""

from __future__ import annotations

import time

import pytest

from cross_instance.errors import WorkflowOwnedError
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config

time_machine = pytest.importorskip("time_machine")
HOUR = 3600.0
RATE, BURST = 10, 5  # per second, as rpm 600


def _max_in_any_window(grants: list[int], width_ns: int) -> int:
    best, start = 0, 0
    for end, t in enumerate(grants):
        while grants[start] < t - width_ns:
            start += 1
        best = max(best, end - start + 1)
    return best


def _grant_for(rt: Runtime, seconds: float, grants: list[int]) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        with rt.permit("p", timeout=5):
            grants.append(rt.store.now_ns())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("jump", [HOUR, -HOUR], ids=["forward", "back"])
def test_a_wall_clock_jump_moves_no_lease_and_no_window(tmp_path, jump):
    cfg = make_config(tmp_path / "state", rpm=RATE * 60, burst=BURST, interval_ms=100,
                      timeout_ms=1000)
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="a") as a, \
            Runtime.start(cwd=tmp_path, config=cfg, instance_id="b") as b:
        a.workflows.claim("wf")
        before = a.store.now_ns()
        held = a.locks.try_acquire("res", ttl=1.5)  # not renewed: it must end after 1.5 s
        after = a.store.now_ns()
        assert held is not None
        grants: list[int] = []
        _grant_for(a, 1.0, grants)  # the bucket runs dry before the jump
        with time_machine.travel(time.time() + jump, tick=True):
            jumped = b.store.now_ns()
            # not early: the live owner's lease and the lock's TTL still hold
            assert b.locks.try_acquire("res", ttl=1) is None
            with pytest.raises(WorkflowOwnedError):
                b.workflows.claim("wf")
            _grant_for(a, 1.5, grants)
            # not late: the lock ends 1.5 s after it was granted, on the store's clock
            got, tried = None, 0
            while got is None and b.store.now_ns() < jumped + 10 * 10**9:
                tried = b.store.now_ns()
                got = b.locks.try_acquire("res", ttl=1)
                if got is None:
                    time.sleep(0.05)
            taken = b.store.now_ns()
            assert got is not None and got.token == held.token + 1
            assert taken >= before + 1_500_000_000  # never before its TTL
            assert tried <= after + 1_500_000_000 + 2 * 10**9  # free soon after (generous)
            with pytest.raises(WorkflowOwnedError):  # the heartbeating owner keeps its own
                b.workflows.claim("wf")
        _grant_for(a, 0.5, grants)
        for width_s in (0.1, 0.5, 1.0, 2.0, 4.0):
            most = _max_in_any_window(grants, int(width_s * 1e9))
            assert most <= BURST + RATE * width_s + 1, (width_s, most)  # +1: both ends
        assert len(grants) >= RATE * 2  # it kept admitting across the jump
