"""The Redis store's work queue at scale (issue 18): with 100,000 tasks queued on one instance
every step still works, and each one runs the same few commands it runs on a short queue,
none of them reading a whole queue (seen on ``MONITOR``: timings on a shared machine are too
noisy to assert). Handing a gone instance's queue to the pool moves it in bounded chunks, and
the finished tasks kept are the latest ``FINISHED_KEPT``."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

try:
    from hiredis import pack_command
except ImportError:  # pragma: no cover: redis-py packs them then
    pack_command = None

from cross_instance.core.workqueue import ORPHANED
from cross_instance.stores import base
from cross_instance.stores.redis import scripts
from cross_instance.stores.redis.store import RedisStore
from tests.conftest import FakeClock, record, redis_prefix

SEC = 1_000_000_000
LEASE = 30 * SEC
MANY = 100_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue_store(shared_redis: Any, clock: FakeClock) -> Iterator[RedisStore]:
    with redis_prefix("pi-test-queue") as url:
        store = RedisStore(url, clock=clock)
        yield store
        store.close()


def _calls(store: RedisStore, op: str, rows: list[tuple[str, ...]]) -> list[Any]:
    """Operation ``op`` once per row of arguments, pipelined on one connection: the real
    step, as the store calls it (prefix, now, then the row), without a round trip each."""
    library = store._lane.library
    if library is None:
        head: tuple[str, ...] = ("EVALSHA", store.client.script_load(scripts.source(op)), "0")
    else:
        head = ("FCALL", library.functions[op], "0")
    now = store._now_arg()
    # a connection of its own (the pool's get_connection changed its arguments across the
    # redis-py versions this package supports)
    kwargs = store.client.connection_pool.connection_kwargs
    conn = redis.connection.Connection(host=kwargs.get("host", "127.0.0.1"),
                                       port=kwargs.get("port", 6379), db=kwargs.get("db", 0))
    out: list[Any] = []
    try:
        for i in range(0, len(rows), 2000):
            commands = [(*head, store.prefix, now, *row) for row in rows[i:i + 2000]]
            packed = ([pack_command(c) for c in commands] if pack_command is not None
                      else conn.pack_commands(commands))
            conn.send_packed_command(packed)
            out += [conn.read_response() for _ in commands]
    finally:
        conn.disconnect()
    return out


def _put_many(store: RedisStore, owner: str, count: int, first: int = 0) -> None:
    rows = [(owner, f"t{i}", "tool", "0", json.dumps({"n": i}), "3")
            for i in range(first, first + count)]
    replies = _calls(store, "task_put", rows)
    assert all(r[0] in (b"task", "task") for r in replies)


class Monitor:
    """The commands the server runs on keys under ``prefix`` while ``watching`` (those the
    scripts run included), from a ``MONITOR`` connection of its own."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=10)
        self.seen: list[str] = []
        self.mark = f"{prefix}monitor-mark"
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()
        self._ready.wait(5)
        time.sleep(0.2)  # MONITOR is in place once its first reply came

    def _listen(self) -> None:
        with self.client.monitor() as m:
            self._ready.set()
            for c in m.listen():
                command = c["command"]
                if command == f"GET {self.mark}":
                    return
                if self.prefix in command and not command.startswith(("FCALL", "EVALSHA")):
                    self.seen.append(command)

    def watching(self, step: Callable[[], Any]) -> tuple[Any, list[str]]:
        start = len(self.seen)
        result = step()
        probe = redis.Redis(host="127.0.0.1", port=6379)
        probe.get(f"{self.prefix}monitor-sync")
        deadline = time.monotonic() + 5  # the commands reach MONITOR before the next one
        while time.monotonic() < deadline and not any(
                "monitor-sync" in c for c in self.seen[start:]):
            time.sleep(0.01)
        probe.close()
        return result, [c for c in self.seen[start:] if "monitor-sync" not in c]

    def close(self) -> None:
        stop = redis.Redis(host="127.0.0.1", port=6379)
        stop.get(self.mark)
        stop.close()
        self._thread.join(5)
        self.client.close()


def _whole_reads(commands: list[str], prefix: str) -> list[str]:
    """Commands that read a queue or an index whole (a full range, an unbounded range, a
    scan). Reading one task hash (HGETALL of P t:<id>), one owner's runs (P tr:<owner>) or
    the owners with tasks queued (P tbusy: as many as instances) is fine."""
    def whole(c: str) -> bool:
        verb = c.split(" ", 1)[0].upper()
        return any([
            verb in ("ZRANGE", "ZREVRANGE") and re.search(r" -1( |$)", c) is not None
            and f"{prefix}tbusy" not in c,
            verb == "SMEMBERS" and f"{prefix}tr:" not in c,
            verb == "HGETALL" and f"{prefix}t:" not in c,
            verb == "ZRANGEBYSCORE" and "LIMIT" not in c.upper() and "-inf" in c,
            verb in ("KEYS", "SCAN", "ZUNIONSTORE", "ZINTERSTORE", "SORT")])

    return [c for c in commands if whole(c)]


def test_every_step_stays_small_with_a_hundred_thousand_tasks_queued(queue_store, clock):
    store = queue_store
    for iid in ("busy", "idle", "thief"):
        store.register_instance(record(iid, lease_s=600))
    started = time.monotonic()
    _put_many(store, "busy", MANY)
    assert time.monotonic() - started < 60
    urgent = store.put_task("busy", "urgent", "tool", 5, "{}", 3)
    counts = {c.instance_id: c for c in store.queue_counts()}
    assert counts["busy"].queued == MANY + 1

    monitor = Monitor(store.prefix)
    try:
        # each step: the same handful of commands on a short queue and on this one
        taken, take_cmds = monitor.watching(lambda: store.take_task("busy", LEASE))
        assert (taken.task_id, taken.fence, taken.owner) == ("urgent", 1, "busy")
        assert taken.seq == urgent.seq and taken.lease_until_ns == clock.now + LEASE
        stolen, steal_cmds = monitor.watching(lambda: store.steal_task("thief", LEASE, 2))
        assert (stolen.task_id, stolen.owner, stolen.state) == ("t0", "thief", "running")
        renewed, renew_cmds = monitor.watching(
            lambda: store.renew_task("t0", stolen.fence, 2 * LEASE))
        assert renewed.lease_until_ns == clock.now + 2 * LEASE
        done, settle_cmds = monitor.watching(
            lambda: store.settle_task("t0", stolen.fence, "done", "true"))
        assert done.state == "done" and done.result == "true"
        retried, retry_cmds = monitor.watching(
            lambda: store.settle_task("urgent", taken.fence, "retry", '"again"'))
        assert (retried.state, retried.owner, retried.error) == ("queued", "busy", '"again"')
        listed, list_cmds = monitor.watching(
            lambda: store.list_tasks(owner="busy", state="queued", limit=3))
        assert [t.task_id for t in listed] == ["urgent", "t1", "t2"]
        every, every_cmds = monitor.watching(lambda: store.list_tasks(limit=3))
        assert [t.task_id for t in every] == ["urgent", "t1", "t2"]
        put, put_cmds = monitor.watching(
            lambda: store.put_task("busy", "late", "tool", 0, "{}", 3))
        assert put.seq > urgent.seq
        for name, cmds in [("take", take_cmds), ("steal", steal_cmds),
                           ("renew", renew_cmds), ("settle", settle_cmds),
                           ("retry", retry_cmds), ("list", list_cmds),
                           ("list every", every_cmds), ("put", put_cmds)]:
            assert cmds, f"{name}: MONITOR showed nothing"
            assert len(cmds) < 60, f"{name} ran {len(cmds)} commands: {cmds}"
            assert not _whole_reads(cmds, store.prefix), (name, _whole_reads(cmds,
                                                                             store.prefix))
    finally:
        monitor.close()

    counts = {c.instance_id: c for c in store.queue_counts()}
    # t1..t99999, urgent (back from its retry) and late
    assert (counts["busy"].queued, counts["busy"].running) == (MANY + 1, 0)
    assert (counts["thief"].done, counts["thief"].stealing.successful_steals) == (1, 1)

    # the instance goes: its whole queue moves to the pool, in run order, nothing lost
    store.unregister_instance("busy")
    counts = {c.instance_id: c for c in store.queue_counts()}
    assert (counts["busy"].queued, counts[ORPHANED].queued) == (0, MANY + 1)
    assert [t.task_id for t in store.list_tasks(owner=ORPHANED, limit=3)] == \
        ["urgent", "t1", "t2"]
    assert store.client.zcard(f"{store.prefix}tq:busy") == 0
    assert store.client.zcard(f"{store.prefix}tq:") == MANY + 1
    nxt = store.take_task("idle", LEASE)
    assert (nxt.task_id, nxt.owner, nxt.attempts) == ("urgent", "idle", 2)
    assert store.get_task("t99999").owner == ORPHANED


def test_only_the_latest_finished_tasks_are_kept(queue_store):
    store = queue_store
    store.register_instance(record("w", lease_s=600))
    extra = 30
    n = base.FINISHED_KEPT + extra
    _put_many(store, "w", n)
    lease_us = str(LEASE // 1000)
    runs = _calls(store, "task_take", [("w", lease_us)] * n)
    assert all(r[0] in (b"task", "task") for r in runs)
    _calls(store, "task_settle", [(f"t{i}", "1", "done", str(i)) for i in range(n)])
    kept = store.list_tasks(state="done", limit=100_000)
    assert len(kept) == base.FINISHED_KEPT
    assert [t.task_id for t in kept[:2]] == [f"t{n - 1}", f"t{n - 2}"]  # latest first
    assert kept[-1].task_id == f"t{extra}"
    assert store.get_task("t0") is None and store.get_task(f"t{extra}") is not None
    assert store.client.zcard(f"{store.prefix}tdone") == base.FINISHED_KEPT
    assert {c.instance_id: c for c in store.queue_counts()}["w"].done == n  # counts stay


def test_the_lua_keeps_as_many_finished_tasks_as_the_protocol_says():
    text = (scripts._folder() / "queue.lua").read_text(encoding="utf-8")
    assert re.search(rf"^local TASKS_KEPT = {base.FINISHED_KEPT}\b", text, re.M)
