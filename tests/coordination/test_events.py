"""The shared event log: bounded on every store, the runtime's own kinds (429s, cooldowns,
learned limits, usage warnings) with JSON data and names as given, and ``rt.events``:
subscriptions on threads of their own that never slow permits, ``recent``, ``afollow``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from cross_instance.config import load_config
from cross_instance.core import events as ev
from cross_instance.core.limits import ModelLimits, ProviderLimits
from cross_instance.core.records import Adjustment, Event
from cross_instance.errors import ConfigError, InvalidArgument
from cross_instance.runtime import Runtime
from cross_instance.stores.base import Store
from tests.conftest import FakeClock, redis_prefix
from tests.helpers_runtime import make_config

ODD = 'gpt "4o"/mini=ü x\\ y'  # a model name with quotes, a slash, '=', a space, non-ASCII
DEADLINE_S = 20.0  # how long a test waits for something that must happen (never a bound)


def _all_events(store: Store) -> list[Event]:
    out: list[Event] = []
    while page := store.events(out[-1].event_id if out else 0, 1000):
        out.extend(page)
    return out


def _bound(store_kind: str) -> tuple[int, int]:
    """(kept, trimmed every) of the store kind's event log, read where each store sets it."""
    if store_kind.startswith("redis"):
        from cross_instance.stores.redis import scripts

        text = scripts.source("record_event")
        kept = re.search(r"local EVENTS_KEPT = (\d+)", text)
        every = re.search(r"local EVENTS_TRIM_EVERY = (\d+)", text)
        assert kept and every
        return int(kept.group(1)), int(every.group(1))
    from cross_instance.stores.sqlite import registry  # sqlite, and the daemon's sqlite store

    return registry.EVENTS_KEPT, registry.EVENTS_TRIM_EVERY


# --- the log itself, on every store kind ----------------------------------------------------
def test_the_log_stays_bounded_and_ids_keep_increasing(store_kind, store):
    kept, every = _bound(store_kind)
    written = kept + 2 * every + 7
    for i in range(written):
        store.record_event("test_tick", None, {"i": i})
    events = _all_events(store)
    ids = [e.event_id for e in events]
    assert ids == sorted(set(ids))  # strictly increasing
    assert kept <= len(events) <= kept + every  # trimmed, and never below the bound
    assert events[-1].data == {"i": written - 1}  # the newest is the last written
    assert [e.data["i"] for e in events] == list(range(written - len(events), written))
    store.record_event("test_tick", None, {"i": written})
    assert store.events(ids[-1], 10)[0].event_id > ids[-1]  # ids keep growing after a trim


def test_every_kind_keeps_json_data_and_names_as_given(store):
    change = Adjustment(f"r:p/{ODD}", 600.0, 540.0, 0, "429 error detected")
    written = {
        ev.RATE_LIMITED: ev.rate_limited(f"r:p/{ODD}", 2.5),
        ev.COOLDOWN_STARTED: ev.cooldown_started(change, 2.5, 1_700_000_000_000),
        ev.COOLDOWN_ENDED: ev.cooldown_ended(f"r:p/{ODD}", "expired"),
        ev.LIMIT_LEARNED: ev.limit_learned(change, 540),
        ev.RATE_LIMIT_WARNING: ev.usage_warning(f"r:p/{ODD}", 9, 10, 0.8),
    }
    for kind, data in written.items():
        store.record_event(kind, "inst-1", data)
    read = {e.kind: e for e in store.events(0, 1000) if e.kind in written}
    assert set(read) == set(written)
    for kind, data in written.items():
        assert read[kind].data == json.loads(json.dumps(data)) == data, kind
        assert read[kind].data["model"] == ODD and read[kind].data["provider"] == "p"
        assert read[kind].instance_id == "inst-1"
        assert json.loads(json.dumps(ev.event_json(read[kind])))["kind"] == kind


# --- runtimes on SQLite and Redis -----------------------------------------------------------
def _config(state: Path, store: str | None, **changes: Any) -> Any:
    cfg = make_config(state, store=store, timeout_ms=30_000)  # leases never lapse under load
    providers = MappingProxyType({"p": ProviderLimits(
        6000, 100, models=MappingProxyType({"*": ModelLimits(6000, 100)}))})
    return dataclasses.replace(cfg, **{"providers": providers, **changes})


@pytest.fixture(params=["sqlite", "redis"])
def runtime_store(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The store URL the runtimes of a test share (None: the embedded SQLite store)."""
    if request.param == "sqlite":
        yield None
        return
    with redis_prefix("pi-events") as url:
        yield url


@pytest.fixture
def reader(tmp_path: Path, runtime_store: str | None) -> Iterator[Store]:
    """Another connection to the runtimes' store, to read the log after they closed."""
    from cross_instance.stores import open_store

    store = open_store(runtime_store or f"sqlite://{tmp_path / 'state'}")
    yield store
    store.close()


@pytest.fixture
def start(tmp_path: Path, runtime_store: str | None) -> Iterator[Callable[..., Runtime]]:
    started: list[Runtime] = []

    def run(instance_id: str, clock: FakeClock | None = None, **changes: Any) -> Runtime:
        cfg = _config(tmp_path / "state", runtime_store, **changes)
        rt = Runtime.start(cwd=tmp_path, config=cfg, instance_id=instance_id, clock=clock)
        started.append(rt)
        return rt

    yield run
    for rt in reversed(started):
        rt.close()


def _wait_for(rt: Runtime, kind: str, count: int = 1) -> list[Event]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = [e for e in _all_events(rt.store) if e.kind == kind]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_429_is_announced_with_its_cooldown_and_learned_limit(start):
    rt = start("a")
    with rt.permit("p", model=ODD) as p:
        p.report(429, {"retry-after": "1"})
    (limited,) = _wait_for(rt, ev.RATE_LIMITED)
    assert limited.instance_id == "a"
    assert limited.data == {"provider": "p", "model": ODD, "bucket": f"r:p/{ODD}",
                            "status": 429, "retryAfterSeconds": 1.0}
    learned = {e.data["bucket"]: e.data for e in _wait_for(rt, ev.LIMIT_LEARNED, 2)}
    assert learned[f"r:p/{ODD}"]["oldRate"] == 6000.0
    assert learned[f"r:p/{ODD}"]["newRate"] == 5400.0  # x 0.9
    assert learned["r:p"]["model"] is None
    started = {e.data["bucket"]: e.data for e in _wait_for(rt, ev.COOLDOWN_STARTED, 2)}
    assert 0 < started[f"r:p/{ODD}"]["seconds"] <= 1.0
    assert started[f"r:p/{ODD}"]["model"] == ODD
    ended = _wait_for(rt, ev.COOLDOWN_ENDED, 2)  # when the second has passed
    assert sorted(e.data["bucket"] for e in ended) == sorted(["r:p", f"r:p/{ODD}"])
    assert {e.data["reason"] for e in ended} == {"expired"}
    assert rt.try_permit("p", model=ODD) is not None  # it really has ended


def test_a_cooldown_moved_later_by_another_instance_ends_once(start, clock, reader):
    a, b = start("a", clock), start("b", clock)
    first, second = a.permit("p"), b.permit("p")  # both before the cooldown: time stands
    first.report(429, {"retry-after": "1"})
    second.report(429, {"retry-after": "2"})  # b's end is later than a's
    first.release()
    second.release()
    assert len(_wait_for(a, ev.COOLDOWN_STARTED, 2)) == 2
    clock.advance(3)
    (ended,) = _wait_for(a, ev.COOLDOWN_ENDED)
    assert ended.instance_id == "b"  # the instance that set the last end announces it
    a.close()
    b.close()  # nothing left to announce: a's check found b's end later than its own
    assert [e.instance_id for e in _all_events(reader) if e.kind == ev.COOLDOWN_ENDED] == ["b"]


def test_a_cooldown_reset_by_hand_is_announced_as_reset(start, clock):
    rt = start("a", clock)
    with rt.permit("p") as p:
        p.report(429, {"retry-after": "1"})
    _wait_for(rt, ev.COOLDOWN_STARTED)
    assert rt.store.reset_learned() >= 1  # what `pi-xi limits reset` does
    (ended,) = _wait_for(rt, ev.COOLDOWN_ENDED)  # the store's clock never reached the end
    assert ended.data["reason"] == "reset"


def test_usage_above_the_share_warns_once_per_bucket(start, reader):
    rt = start("a", rate_limit_warning_share=0.5,
               providers=MappingProxyType({"p": ProviderLimits(10, 10)}))
    for _ in range(4):
        rt.permit("p").release()  # 4/10: below half
    assert [e for e in _all_events(rt.store) if e.kind == ev.RATE_LIMIT_WARNING] == []
    for _ in range(4):
        rt.permit("p").release()  # 5/10 warns; 6, 7 and 8 do not again
    (warning,) = _wait_for(rt, ev.RATE_LIMIT_WARNING)
    assert warning.data == {"provider": "p", "model": None, "bucket": "r:p", "used": 5,
                            "limit": 10, "share": 0.5, "threshold": 0.5}
    rt.close()  # everything announced is written by now
    assert len([e for e in _all_events(reader) if e.kind == ev.RATE_LIMIT_WARNING]) == 1


def test_the_warning_gate():
    gate = ev.WarningGate(0.8, every_s=60)
    assert not gate.passes("r:p", 79, 100, 0.0)
    assert gate.passes("r:p", 80, 100, 0.0)
    assert not gate.passes("r:p", 100, 100, 59.9)  # once per bucket per minute
    assert gate.passes("r:q", 90, 100, 1.0)  # buckets apart
    assert gate.passes("r:p", 95, 100, 60.0)
    assert not gate.passes("r:p", 0, 0, 500.0)  # a grant that reports no limit


def test_callbacks_by_kind_and_on_event(start):
    a = start("a")
    got: queue.Queue[tuple[str, Event]] = queue.Queue()

    def note(name: str) -> Callable[[Event], None]:
        return lambda e: got.put((name, e))

    with a.events.subscribe(on_instance_connected=note("up"),
                            on_instance_disconnected=note("down"),
                            on_workflow_claimed=note("claimed"),
                            on_workflow_released=note("released"),
                            on_lock_lost=note("lost"),
                            on_event=note("any"), poll=0.05) as sub:
        b = start("b")
        b.workflows.release(b.workflows.claim(ODD).workflow_id)
        assert b.store.acquire_lock(ODD, "b", 1_000_000, None, False) is not None  # 1 ms
        while b.locks.cleanup_expired() == 0:  # until the store's clock passed the TTL
            time.sleep(0.01)
        b.close()
        seen: list[tuple[str, str, str | None]] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(seen) < 10 and time.monotonic() < deadline:
            try:
                name, e = got.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append((name, e.kind, e.instance_id))
        assert seen == [("up", "instance_up", "b"), ("any", "instance_up", "b"),
                        ("claimed", "workflow_claimed", "b"),
                        ("any", "workflow_claimed", "b"),
                        ("released", "workflow_released", "b"),
                        ("any", "workflow_released", "b"),
                        ("lost", "lock_lost", "b"), ("any", "lock_lost", "b"),
                        ("down", "instance_down", "b"), ("any", "instance_down", "b")]
        assert sub.statistics()["errors"] == 0
    assert not sub.running


def test_a_blocked_subscriber_slows_neither_permits_nor_other_subscribers(start):
    rt = start("a")
    entered, leave = threading.Event(), threading.Event()
    others: queue.Queue[Event] = queue.Queue()

    def stuck(event: Event) -> None:
        entered.set()
        leave.wait(60)

    slow = rt.events.subscribe(on_event=stuck, poll=0.05)
    fast = rt.events.subscribe(on_workflow_claimed=others.put, poll=0.05)
    rt.workflows.claim("first")
    assert entered.wait(DEADLINE_S)
    for _ in range(50):
        rt.permit("p").release()
    rt.workflows.claim("second")
    names = {others.get(timeout=DEADLINE_S).data["workflow"] for _ in range(2)}
    assert names == {"first", "second"}
    assert not leave.is_set() and slow.running  # all of that while the slow one was stuck
    leave.set()
    slow.close()
    fast.close()


def test_a_raising_callback_is_counted_and_delivery_goes_on(start):
    rt = start("a")
    after: queue.Queue[Event] = queue.Queue()

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    with rt.events.subscribe(on_workflow_claimed=broken, on_event=after.put, poll=0.05) as sub:
        rt.workflows.claim("one")
        rt.workflows.claim("two")
        kinds = [after.get(timeout=DEADLINE_S).data.get("workflow") for _ in range(2)]
        assert kinds == ["one", "two"]
        assert sub.statistics()["errors"] == 2 and sub.running


def test_recent_and_subscribing_from_an_id(start):
    rt = start("a")
    rt.workflows.claim("w")
    everything = rt.events.recent()
    assert [e.kind for e in everything][:1] == ["instance_up"]
    assert rt.events.recent(after_id=everything[0].event_id, limit=1) == everything[1:2]
    assert rt.events.last(1) == everything[-1:]
    replay: queue.Queue[Event] = queue.Queue()
    with rt.events.subscribe(on_event=replay.put, after_id=0, poll=0.05):
        assert replay.get(timeout=DEADLINE_S) == everything[0]  # from the oldest kept
    for bad in ({"on_event": 3}, {"poll": 0}, {"after_id": -1}):
        with pytest.raises(InvalidArgument):
            rt.events.subscribe(**bad)
    with pytest.raises(InvalidArgument):
        rt.events.recent(limit=0)


def test_closing_the_runtime_stops_its_subscriptions(start):
    rt = start("a")
    sub = rt.events.subscribe(on_event=lambda e: None, poll=0.05)
    rt.close()
    assert not sub.running


def test_afollow_yields_the_events_after_an_id_and_then_new_ones(start):
    rt = start("a")
    after = rt.events.last(1)[-1].event_id
    rt.workflows.claim("w")

    async def two() -> list[Event]:
        events = rt.events.afollow(after_id=after, poll=0.05)
        try:
            got = [await asyncio.wait_for(anext(events), DEADLINE_S)]
            later = threading.Timer(0.1, rt.workflows.claim, ["v"])  # while it polls
            later.start()
            got.append(await asyncio.wait_for(anext(events), DEADLINE_S))
            later.join()
            await asyncio.to_thread(rt.close)
            with pytest.raises(StopAsyncIteration):  # the runtime closed: iteration ends
                await asyncio.wait_for(anext(events), DEADLINE_S)
            return got
        finally:
            await events.aclose()

    assert [e.data["workflow"] for e in asyncio.run(two())] == ["w", "v"]


# --- the config key -------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "problem"), [
    (0, "must be > 0"), (1.5, "must be <= 1"), ("high", "expected a number"),
    (True, "expected a number")])
def test_the_warning_share_is_validated(tmp_path, value, problem):
    (tmp_path / ".pi").mkdir()
    (tmp_path / ".pi" / "config.json").write_text(
        json.dumps({"crossInstance": {"rateLimitWarningShare": value}}))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={})
    assert err.value.key == "crossInstance.rateLimitWarningShare"
    assert problem in str(err.value)


def test_the_warning_share_loads_and_defaults(tmp_path):
    assert load_config(tmp_path, env={}).rate_limit_warning_share == 0.8
    (tmp_path / ".pi").mkdir()
    (tmp_path / ".pi" / "config.json").write_text(
        json.dumps({"crossInstance": {"rateLimitWarningShare": 0.9}}))
    cfg = load_config(tmp_path, env={})
    assert cfg.rate_limit_warning_share == 0.9
    assert cfg.to_json()["rateLimitWarningShare"] == 0.9
