"""A process cut off from Redis (a partition of its host only) past its instance's lease, but
not past its lock's TTL or its task's lease: the others judge its instance dead, take its
lock and run its task, so neither the cut-off lock nor the cut-off run may pass ``ensure()``
on the strength of its own, longer, validity. When the partition heals, the instance
registers again, and a run from before is still told it lost its task."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from contextlib import contextmanager

import pytest

from cross_instance.coordination.locks import HeldLock
from cross_instance.core.workqueue import QueueSettings
from cross_instance.errors import LockLostError, StoreUnavailable, TaskLostError
from cross_instance.runtime import Runtime
from cross_instance.stores.redis.store import RedisStore
from tests.conftest import redis_prefix
from tests.helpers_runtime import make_config
from tests.redis.reply_proxy import ReplyProxy


@contextmanager
def _cut_off_a(tmp_path):
    """Runtimes a (through a proxy that can cut it off) and b, on one Redis prefix; leases
    of 1 s for instances, 30 s for queue runs."""
    with redis_prefix("pi-part") as url:
        proxy = ReplyProxy(6379)
        cfg = dataclasses.replace(
            make_config(tmp_path / "state", interval_ms=100, timeout_ms=1000, store=url),
            queue=QueueSettings(lease_ms=30_000))
        cut = url.replace("127.0.0.1:6379", f"127.0.0.1:{proxy.port}")
        a = Runtime.start(cwd=tmp_path, config=cfg, instance_id="a",
                          store=RedisStore(cut, retry_for_s=0.2, socket_timeout_s=0.2))
        b = Runtime.start(cwd=tmp_path, config=cfg, instance_id="b")
        try:
            yield a, b, proxy
        finally:
            b.close()
            a.close()
            proxy.close()


@pytest.mark.timeout(60)
def test_a_lock_cut_off_past_its_instance_lease_is_lost_not_trusted(tmp_path):
    with _cut_off_a(tmp_path) as (a, b, proxy):
        held = a.locks.try_acquire("deploy\tmain", ttl=30)  # a TTL far past the lease
        held.ensure()
        proxy.blackhole.set()
        taken = b.locks.acquire("deploy\tmain", ttl=30, timeout=20)  # a's was freed
        assert taken.token > held.token
        with pytest.raises(LockLostError, match="instance's lease"):
            held.ensure()  # its own TTL has 29 s left; its instance's lease ran out
        b.locks.release(taken)


@pytest.mark.timeout(60)
def test_a_run_cut_off_past_its_instance_lease_is_lost_not_renewed(tmp_path):
    with _cut_off_a(tmp_path) as (a, b, proxy):
        a.queue.put("charge-card", task_id="pay")
        a.queue.put("send-mail", task_id="mail")
        during, after = a.queue.take(), a.queue.take()
        during.ensure()
        proxy.blackhole.set()
        taken = _until(lambda: b.queue.next())  # a judged dead: its runs went to the pool
        assert taken.task_id in ("pay", "mail") and taken.fence > during.fence
        with pytest.raises(TaskLostError, match="instance's lease"):
            during.ensure()  # its own lease has 29 s left; its instance's ran out
        proxy.blackhole.clear()
        _until(lambda: a._membership.generation == 1 or None)  # registered again
        with pytest.raises(TaskLostError, match="judged dead"):
            after.ensure()  # never checked while cut off: told now
        with pytest.raises(TaskLostError):
            after.complete("late")
        assert taken.complete("b").state == "done"


@pytest.mark.timeout(60)
def test_a_run_whose_completion_cannot_be_recorded_is_let_go_not_renewed(tmp_path):
    """Leaving ``with run:`` while the store does not answer: the error is raised, and the
    run is let go (no more renewals), so its lease ends and the task is queued again, on its
    owner's queue. The cut is shorter than the instance's lease: it is not judged dead, so
    only the run's own lease can hand the task on."""
    with _cut_off_a(tmp_path) as (a, _, proxy):
        a.queue.put("x", task_id="unrecorded")
        run = a.queue.take(lease=1.0)
        proxy.blackhole.set()
        try:
            with pytest.raises(StoreUnavailable), run:
                pass  # the work is done; its completion cannot be sent
        finally:
            proxy.blackhole.clear()
        assert run.lost is not None and "unrecorded" not in a.queue._running
        taken = _until(lambda: a.queue.take())  # once the run's lease (1 s) has ended
        assert taken.task_id == "unrecorded" and taken.fence > run.fence
        assert a._membership.generation == 0  # a was never judged dead meanwhile
        taken.complete("again")


@pytest.mark.timeout(60)
def test_leaving_a_lock_or_workflow_while_cut_off_keeps_the_callers_error(tmp_path):
    """The release the store does not answer: the block's own exception (Ctrl-C here) is
    the one raised, and ``release()`` may be called again once the store answers."""
    with _cut_off_a(tmp_path) as (a, b, proxy):
        for hold in (lambda: a.locks.hold("L\tone", ttl=60), lambda: a.workflows.hold("W")):
            with pytest.raises(KeyboardInterrupt):
                with hold() as held:
                    proxy.blackhole.set()
                    raise KeyboardInterrupt
            proxy.blackhole.clear()
            if isinstance(held, HeldLock):  # its release was sent: no longer to be relied on
                with pytest.raises(LockLostError, match="release was sent"):
                    held.ensure()
            assert held.release() is True  # tried again: it went through this time
        assert b.locks.list() == [] and b.workflows.check("W")["owned"] is True
        b.workflows.release("W")
        # left owned by a release that failed, a later hold of the workflow releases it
        with pytest.raises(KeyboardInterrupt):
            with a.workflows.hold("V"):
                proxy.blackhole.set()
                raise KeyboardInterrupt
        proxy.blackhole.clear()
        with a.workflows.hold("V") as again:
            assert again.action == "owned"
        assert b.workflows.check("V")["owned"] is True


@pytest.mark.timeout(60)
def test_ctrl_c_during_an_acquire_whose_reply_is_lost_stays_ctrl_c(tmp_path):
    """The store granted or queued it, the reply never came, and leaving the wait cannot be
    sent either: the caller sees its own Ctrl-C, not the store's error."""
    with _cut_off_a(tmp_path) as (a, _, proxy):
        proxy.drop_replies.set()
        stop = threading.Timer(0.1, lambda: signal.pthread_kill(threading.main_thread().ident,
                                                                signal.SIGINT))
        stop.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                a.locks.acquire("k", ttl=60, timeout=5)
        finally:
            stop.cancel()
            proxy.drop_replies.clear()


def _until(check, bound_s=20.0):
    end = time.monotonic() + bound_s
    while (got := check()) is None:
        assert time.monotonic() < end, "never happened"
        time.sleep(0.05)
    return got
