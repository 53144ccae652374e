"""The runtime on a Redis that fails: restarted empty while things are held, paused past a
lease, connections killed (FAULTS.md F11, F13), on a private redis-server."""

from __future__ import annotations

import threading
import time

import pytest

from cross_instance.errors import LockLostError, StaleEpochError, StoreUnavailable
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


def runtime(tmp_path, server, name, **cfg):
    config = make_config(tmp_path / "state", store=f"redis://127.0.0.1:{server.port}/0",
                         **cfg)
    return Runtime.start(cwd=tmp_path, config=config, instance_id=name)


def test_restart_without_persistence_everyone_learns_and_tokens_move_up(tmp_path, server):
    lost = []
    with runtime(tmp_path, server, "a", total=1, interval_ms=100, timeout_ms=2000) as a:
        held = a.permit("p")
        wf = a.workflows.claim("wf")
        with pytest.raises(LockLostError):
            with a.locks.hold("res", ttl=0.6, on_lost=lambda h, e: lost.append(e.reason)) as lock:
                server.stop()
                server.start()  # empty: leases, permits, locks and workflows are gone
                time.sleep(0.6)  # the renewal (every ttl/3) finds the lock gone
                with pytest.raises(LockLostError):
                    lock.ensure()
        assert lost
        with pytest.raises(StaleEpochError):
            wf.write(step=2)  # its epoch belongs to a previous incarnation
        again = a.workflows.claim("wf")
        assert again.epoch > wf.epoch  # fencing tokens never go backwards
        assert a.locks.try_acquire("res", ttl=5).token > lock.token
        held.release()  # a release of a permit the server forgot is harmless
        with a.permit("p", timeout=5):  # the runtime re-registered and published again
            pass


def test_a_pause_past_the_ttl_stops_the_holder_before_anyone_else_may_act(tmp_path, server):
    with runtime(tmp_path, server, "a", interval_ms=100, timeout_ms=10_000) as a:
        held = a.locks.try_acquire("res", ttl=1.0)
        server.admin().execute_command("CLIENT", "PAUSE", 2500, "ALL")
        time.sleep(1.2)  # past the TTL by the holder's own clock, while the server is paused
        with pytest.raises(LockLostError):
            held.ensure()  # cannot confirm: waits for the server, which says it expired
        with runtime(tmp_path, server, "b", timeout_ms=10_000) as b:
            assert b.locks.try_acquire("res", ttl=5).token == held.token + 1


def test_killed_connections_are_retried_without_granting_twice(tmp_path, server):
    with runtime(tmp_path, server, "a", total=2, timeout_ms=10_000) as a:
        stop = threading.Event()

        def killer() -> None:
            admin = server.admin()
            while not stop.is_set():
                admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                time.sleep(0.01)

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            for _ in range(100):
                with a.permit("p", timeout=10):
                    pass
        finally:
            stop.set()
            thread.join()
        assert a.status()["activeRequests"] == 0  # no orphaned permit holds a slot
        assert len(a.store.snapshot().permits) == 0


def test_a_server_that_stays_down_fails_closed_and_retryable(tmp_path, server):
    a = runtime(tmp_path, server, "a", timeout_ms=10_000)
    try:
        a.store.client.connection_pool.reset()
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as err:
            a.permit("p", timeout=1)
        assert err.value.retryable and err.value.code == "store_unavailable"
        assert time.monotonic() - started < 30  # bounded, then surfaced
    finally:
        server.start()
        a.close()


def test_a_grant_whose_reply_was_lost_is_released_not_held_for_the_instances_life(
        tmp_path, server):
    """The permit call runs and grants, but its reply is lost (a proxy drops the server's
    answers) until the client gives up with store_unavailable. Nobody holds that permit: the
    runtime frees it (it chose the id it sent) instead of keeping the slot until it exits."""
    from cross_instance.stores.redis.store import RedisStore
    from tests.redis.reply_proxy import ReplyProxy

    proxy = ReplyProxy(server.port)
    url = f"redis://127.0.0.1:{proxy.port}/0"
    store = RedisStore(url, retry_for_s=0.2, socket_timeout_s=0.3)
    config = make_config(tmp_path / "state", store=url, total=1, interval_ms=200,
                         timeout_ms=30_000)
    try:
        with Runtime.start(cwd=tmp_path, config=config, store=store, instance_id="a") as rt:
            rt.permit("p").release()  # limits published, connections warm
            rt._slots.flush()
            proxy.drop_replies.set()
            with pytest.raises(StoreUnavailable):
                rt.permit("p", timeout=5)
            proxy.drop_replies.clear()
            for _ in range(500):  # the flusher sends the release once the store answers
                if not rt.store.snapshot().permits:
                    break
                time.sleep(0.02)
            assert not rt.store.snapshot().permits  # granted to nobody, and freed
            rt.permit("p", timeout=5).release()  # the only slot is free again
    finally:
        proxy.close()
