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
        wf = a.claim_workflow("wf")
        with pytest.raises(LockLostError):
            with a.lock("res", ttl=0.6, on_lost=lambda h, e: lost.append(e.reason)) as lock:
                server.stop()
                server.start()  # empty: leases, permits, locks and workflows are gone
                time.sleep(0.6)  # the renewal (every ttl/3) finds the lock gone
                with pytest.raises(LockLostError):
                    lock.ensure()
        assert lost
        with pytest.raises(StaleEpochError):
            wf.write(step=2)  # its epoch belongs to a previous incarnation
        again = a.claim_workflow("wf")
        assert again.epoch > wf.epoch  # fencing tokens never go backwards
        assert a.try_acquire_lock("res", ttl=5).token > lock.token
        held.release()  # a release of a permit the server forgot is harmless
        with a.permit("p", timeout=5):  # the runtime re-registered and published again
            pass


def test_a_pause_past_the_ttl_stops_the_holder_before_anyone_else_may_act(tmp_path, server):
    with runtime(tmp_path, server, "a", interval_ms=100, timeout_ms=10_000) as a:
        held = a.try_acquire_lock("res", ttl=1.0)
        server.admin().execute_command("CLIENT", "PAUSE", 2500, "ALL")
        time.sleep(1.2)  # past the TTL by the holder's own clock, while the server is paused
        with pytest.raises(LockLostError):
            held.ensure()  # cannot confirm: waits for the server, which says it expired
        with runtime(tmp_path, server, "b", timeout_ms=10_000) as b:
            assert b.try_acquire_lock("res", ttl=5).token == held.token + 1


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
