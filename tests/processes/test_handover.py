"""A release wakes the next waiter in another process at once (its doorbell), on every store,
sync and async; the queue stays first come first served and the cap holds; a lost or stale
doorbell costs a poll, never a grant.

The waiters here poll every 1,000 s (``handover_workers.NEVER_S``): a grant that arrives
within the test was brought by the release, and each waiter also reports which cause ended
its sleeps. Nothing here is timed; the bounds are only for a hung test.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cross_instance.stores import open_store
from cross_instance.stores.base import Store
from cross_instance.stores.sqlite.store import SqliteStore
from tests.checkers import most_at_once
from tests.processes import handover_workers as hw
from tests.processes.spawn import CTX  # forkserver, the package preloaded

BIG_TIMEOUT = {"timeout_ms": 600_000, "interval_ms": 200}  # no refresh, no lease, in a test


def _store(state: Path, cfg: dict[str, Any]) -> Store:
    return open_store(cfg["store"]) if "store" in cfg else SqliteStore(state)


def _names(bells: Path) -> set[str]:
    """The doorbell files (none once the last doorbell of the store removed the directory)."""
    try:
        return set(os.listdir(bells))
    except FileNotFoundError:
        return set()


def _eventually(check: Callable[[], bool], what: str, bound_s: float = 60) -> None:
    end = time.monotonic() + bound_s
    while not check():
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.02)


class Scene:
    """A holder of the only slot and waiters queued behind it, each a real process."""

    def __init__(self, tmp_path: Path, store_cfg: dict[str, Any]) -> None:
        self.state = tmp_path / "state"
        self.cfg = {"total": 1, **BIG_TIMEOUT, **store_cfg}
        self.out = CTX.Queue()
        self.go = CTX.Event()
        self.procs: list[Any] = []
        self.store: Store | None = None
        self.inbox: list[tuple[str, str, Any]] = []

    def start(self, target: Callable[..., None], *args: Any) -> Any:
        p = CTX.Process(target=target, args=(str(self.state), *args))
        p.start()
        self.procs.append(p)
        return p

    def hold(self, api: str, cfg: dict[str, Any] | None = None) -> None:
        """A process takes the only slot and holds it until ``go``."""
        self.start(hw.hold, "holder", self.cfg if cfg is None else cfg, api, self.go, self.out)
        self.expect("held", "holder")

    def bells(self) -> Path:
        """This store's doorbell directory on this host."""
        from cross_instance.runtime import handover

        self.queued()  # opens the store
        assert self.store is not None
        return handover.directory_for(self.store)

    def queued(self) -> int:
        if self.store is None:
            self.store = _store(self.state, self.cfg)
        return self.store.snapshot().waiting

    def expect(self, kind: str, name: str, bound_s: float = 60) -> Any:
        """The next message of ``kind`` from ``name`` (others are kept)."""
        end = time.monotonic() + bound_s
        while True:
            for i, (k, n, value) in enumerate(self.inbox):
                if (k, n) == (kind, name):
                    del self.inbox[i]
                    return value
            left = end - time.monotonic()
            try:
                self.inbox.append(self.out.get(timeout=max(0.01, left)))
            except queue.Empty:
                raise AssertionError(f"{name} never reported {kind!r}") from None

    def close(self) -> None:
        self.go.clear()
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        if self.store is not None:
            self.store.close()


@contextmanager
def scene(tmp_path: Path, store_cfg: dict[str, Any]) -> Iterator[Scene]:
    s = Scene(tmp_path, store_cfg)
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_release_wakes_a_waiter_in_another_process_at_once(tmp_path, store_cfg, api):
    with scene(tmp_path, store_cfg) as s:
        s.hold(api)
        s.start(hw.wait_for_slot, "waiter", s.cfg, api, True, 0.0, s.out)
        _eventually(lambda: s.queued() == 1, "the waiter queued")
        s.go.set()
        released = s.expect("released", "holder")
        got = s.expect("granted", "waiter")  # its polls are 1,000 s apart: the release woke it
        assert got["granted"] >= released
        assert got["woken"] >= 1
        assert got["polls"] == 0


@pytest.mark.parametrize("api", ["sync", "async"])
def test_waiters_in_other_processes_are_served_first_come_first_served(tmp_path, store_cfg,
                                                                        api):
    with scene(tmp_path, store_cfg) as s:
        s.hold(api)
        for i, name in enumerate(("first", "second", "third")):
            s.start(hw.wait_for_slot, name, s.cfg, api, True, 0.2, s.out)
            _eventually(lambda i=i: s.queued() == i + 1, f"{name} queued")
        s.go.set()
        got = {name: s.expect("granted", name) for name in ("first", "second", "third")}
        order = sorted(got, key=lambda n: got[n]["granted"])
        assert order == ["first", "second", "third"]
        for a, b in itertools.pairwise(order):  # one at a time: the cap of 1 held throughout
            assert got[b]["granted"] >= got[a]["released"]
        assert all(g["polls"] == 0 for g in got.values()), got


def test_a_lost_ring_costs_a_poll_never_the_grant(tmp_path, store_cfg):
    """The waiter's doorbell is taken away while it waits: the ring cannot reach it, and its
    ordinary poll still finds the slot (on Redis the store's announcement of the freed slot,
    which needs no doorbell, may come first)."""
    from cross_instance.runtime import handover

    with scene(tmp_path, store_cfg) as s:
        s.hold("sync")
        bells = s.bells()
        s.start(hw.wait_for_slot, "waiter", s.cfg, "sync", False, 0.0, s.out)
        _eventually(lambda: s.queued() == 1, "the waiter queued")
        _eventually(lambda: any(n.startswith(handover.WAITING) for n in _names(bells)),
                    "the waiter's doorbell")
        for name in _names(bells):
            os.unlink(bells / name)
        s.go.set()
        got = s.expect("granted", "waiter")
        assert got["rings"] <= 0  # no doorbell reached it
        if store_cfg.get("store"):  # Redis: the store's announcement may wake it instead
            assert got["polls"] >= 1 or got["announced"] >= 1, got
        else:
            assert got["polls"] >= 1, got


def test_a_killed_waiter_leaves_no_doorbell_that_breaks_the_others(tmp_path, store_cfg):
    from cross_instance.runtime import handover

    with scene(tmp_path, store_cfg) as s:
        s.hold("sync")
        bells = s.bells()
        doomed = s.start(hw.wait_for_slot, "doomed", s.cfg, "sync", True, 0.0, s.out)
        _eventually(lambda: any(n.startswith(handover.WAITING) for n in _names(bells)),
                    "the doomed waiter's doorbell")
        stale = _names(bells)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.join()
        assert stale <= _names(bells)  # what a crash leaves behind
        _eventually(lambda: "doomed" not in {r.instance_id for r in s.store.list_instances()},
                    "the doomed waiter reaped")
        s.start(hw.wait_for_slot, "waiter", s.cfg, "sync", True, 0.0, s.out)
        _eventually(lambda: len(_names(bells) - stale) >= 1, "the waiter's doorbell")
        s.go.set()
        got = s.expect("granted", "waiter")  # the dead waiter's queue place did not block it
        assert got["polls"] == 0
        assert not stale & _names(bells)  # the ring removed the dead doorbell


@pytest.mark.parametrize("api", ["sync", "async"])
def test_the_cap_holds_while_releases_wake_waiters_across_processes(tmp_path, store_cfg, api):
    from tests.processes.spawn import run_together

    cap = 2
    cfg = {"total": cap, "rpm": 600_000, "burst": 10_000, **store_cfg}
    results = run_together(hw.crowd, [(str(tmp_path / "state"), f"w{i}", cfg, api, 6, 8)
                                      for i in range(3)])
    spans = [span for _, ss, _ in results for span in ss]
    assert len(spans) == 3 * 6 * 8
    assert most_at_once(spans) <= cap
    assert sum(woken for _, _, woken in results) > 0  # releases did wake waiters


def test_async_waits_cancelled_at_random_moments_across_processes_leave_nothing(tmp_path,
                                                                                store_cfg):
    """Three processes of asyncio tasks that mostly give up after 1-50 ms: cancellations fall on a
    question that a release (in the process or, by its doorbell or the store's announcement,
    in another) started for the task. While all three are still registered, the store holds
    no permit and queues nobody, and the cap held throughout."""
    cfg = {"total": 1, "rpm": 600_000, "burst": 10_000, **store_cfg}
    done, barrier, out = CTX.Event(), CTX.Barrier(3), CTX.Queue()
    procs = [CTX.Process(target=hw.cancelling_crowd,
                         args=(str(tmp_path / "state"), f"c{i}", cfg, 6, 1.5, done, barrier,
                               out)) for i in range(3)]
    store = _store(tmp_path / "state", cfg)
    try:
        for proc in procs:
            proc.start()
        results = [out.get(timeout=120) for _ in procs]  # all three still registered
        spans = [span for _, ss, _ in results for span in ss]
        assert spans and most_at_once(spans) <= 1
        assert sum(woken for _, _, woken in results) > 0  # releases did wake waiters

        def settled() -> bool:
            snap = store.snapshot()
            return (len(snap.permits), snap.waiting) == (0, 0)

        _eventually(settled, "no permit held and nobody queued", bound_s=10)
    finally:
        done.set()
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        store.close()
    assert [proc.exitcode for proc in procs] == [0, 0, 0]


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_release_wakes_a_waiter_on_another_host_through_redis(tmp_path, api):
    """Three processes on the shared Redis, two "hosts" (``PI_XI_HOSTNAME``: the doorbells
    of one cannot reach the other). The middle one never sends a release by its flusher
    (only at once, because the store's answer said somebody queues), and the waiter on the
    other host never polls in time: its grant came through the store's announcement."""
    from tests.conftest import redis_prefix

    with redis_prefix("pi-hosts") as url, scene(tmp_path, {"store": url}) as s:
        alpha, beta = {**s.cfg, "host": "alpha-test"}, {**s.cfg, "host": "beta-test"}
        stay = CTX.Event()
        stay.set()
        s.hold(api, alpha)
        s.start(hw.wait_for_slot, "next", alpha, api, True, 0.1, s.out, stay)
        _eventually(lambda: s.queued() == 1, "the waiter on the same host queued")
        s.start(hw.wait_for_slot, "far", beta, api, True, 0.0, s.out)
        _eventually(lambda: s.queued() == 2, "the waiter on the other host queued")
        assert s.store is not None
        hosts = {r.instance_id: r.domain.host for r in s.store.list_instances()}
        assert hosts == {"holder": "alpha-test", "next": "alpha-test", "far": "beta-test"}
        s.go.set()
        near = s.expect("granted", "next")
        far = s.expect("granted", "far")
        stay.clear()
        assert far["granted"] >= near["released"]  # one at a time, first come first served
        assert near["polls"] == 0 and far["polls"] == 0, (near, far)
        assert far["woken"] >= 1
        assert far["rings"] == 0  # no doorbell of its host rang: nothing released there
        assert far["announced"] >= 1  # the store's announcement woke it
