"""The facade in one process: try_permit, task cancellation, status, logs. The permit path
itself, sync and async from one driver, is in test_permit_paths.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from cross_instance import RateLimitExceeded
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


@pytest.fixture
def rt(tmp_path):
    runtime = Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "state", rpm=60,
                                                              burst=2, total=2))
    yield runtime
    runtime.close()


def test_try_permit_never_waits(rt, no_sleep):
    held = [rt.try_permit("p"), rt.try_permit("p")]
    assert all(held)
    assert rt.try_permit("p") is None  # no tokens and no slots left: refused, never slept
    for p in held:
        p.release()


def test_async_twin_and_task_cancellation(rt):
    async def main():
        async with rt.apermit("p") as p:
            assert not p.released
        assert p.released
        (await rt.apermit("p")).release()
        task = asyncio.create_task(rt.apermit("p").__aenter__())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(RateLimitExceeded):
            await rt.apermit("p", timeout=0.1)

    asyncio.run(main())
    assert rt.status()["concurrency"]["waiting"] == 0


def test_disabled_means_no_coordination(tmp_path):
    import dataclasses

    cfg = dataclasses.replace(make_config(tmp_path / "s"), enabled=False)
    with Runtime.start(cwd=tmp_path, config=cfg) as rt:
        with rt.permit("p"):
            pass
        assert rt.status()["coordinatorConnected"] is False
    assert not (tmp_path / "s").exists()


def test_status_and_seed_functions(tmp_path):
    cfg = make_config(tmp_path / "s", total=6)
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="one") as a, \
            Runtime.start(cwd=tmp_path, config=cfg, instance_id="two") as b:
        assert a.get_active_instance_count() == 2
        assert a.instances.parallel_limit() == 3
        assert a.get_total_max_llm() == 6
        a.instances.use_model("openai", "gpt-4o")
        b.instances.use_model("openai", "gpt-4o")
        assert a.instances.using_model("openai", "gpt-4o") == 2
        assert a.instances.model_parallel_limit("openai", "gpt-4o", 4) == 2
        a.instances.set_workload(9)
        assert b.instances.dynamic_parallel_limit(0) == 1
        assert a.instances.dynamic_parallel_limit(9) == 5
        status = a.get_coordinator_status()
        assert status["activeInstanceCount"] == 2 and status["myInstanceId"] == "one"
        assert a.is_coordinator_initialized()
        with a.permit("p"):
            view = a.status()
        mine = next(i for i in view["instances"] if i["instanceId"] == "one")
        assert mine["activeRequests"] == 1 and view["activeRequests"] == 1
        assert view["providers"]["p"]["requestsPerMinute"] == 6000


def test_log_lines_like_the_guide(tmp_path):
    with Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "s"), instance_id="a1") as rt:
        with rt.permit("p"):
            pass
    text = (tmp_path / ".pi" / "logs" / "coordinator.log").read_text()
    assert "Instance a1 requested 1 request (p)" in text
    assert "Approved: 1/6000 requests used" in text
    assert text.startswith("[20")


def test_enhanced_heartbeat_also_frees_expired_locks(tmp_path):
    """Seed 001: ``enhancedHeartbeat`` is a heartbeat that includes the cleanup of locks."""
    with Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "s"), instance_id="a") as rt:
        kept = rt.locks.try_acquire("long", ttl=60)
        rt.locks.try_acquire("short", ttl=0.05)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                x.expires_ns > rt.store.now_ns() for x in rt.locks.list() if x.resource == "short"):
            time.sleep(0.02)
        assert {x.resource for x in rt.locks.list()} == {"long", "short"}  # expired, not freed
        before = rt.store.list_instances()[0].heartbeat_ns
        rt.enhanced_heartbeat()
        assert [x.resource for x in rt.locks.list()] == ["long"]
        assert rt.store.list_instances()[0].heartbeat_ns > before
        assert [e.data["resource"] for e in rt.store.events() if e.kind == "lock_lost"] == ["short"]
        kept.release()
