"""The facade in one process: permits (sync and async), timeouts, cancellation, status, logs."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cross_instance import RateLimitExceeded
from cross_instance.acquire import Cancelled
from cross_instance.errors import NotRegisteredError, PermitRequestError
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


@pytest.fixture
def rt(tmp_path):
    runtime = Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "state", rpm=60,
                                                              burst=2, total=2))
    yield runtime
    runtime.close()


def test_permit_context_and_release(rt):
    with rt.permit("p") as p:
        assert not p.released and rt.status()["activeRequests"] == 1
    assert p.released and rt.status()["activeRequests"] == 0


def test_try_permit_never_waits(rt):
    held = [rt.try_permit("p"), rt.try_permit("p")]
    assert all(held)
    started = time.monotonic()
    assert rt.try_permit("p") is None  # no tokens and no slots left: refused at once
    assert time.monotonic() - started < 1.0
    for p in held:
        p.release()


def test_timeout_that_cannot_be_met_fails_at_once_with_retry_after(rt):
    rt.permit("p").release(), rt.permit("p").release()
    started = time.monotonic()
    with pytest.raises(RateLimitExceeded) as err:
        rt.permit("p", timeout=0.2)  # the next token is a second away
    assert time.monotonic() - started < 0.5
    assert err.value.code == "RATE_LIMIT_EXCEEDED"
    assert 0.5 < err.value.retry_after <= 1.0
    assert rt.status()["concurrency"]["waiting"] == 0  # left the queue
    rt.log.flush()
    text = (rt.cwd / ".pi" / "logs" / "coordinator.log").read_text()
    assert f"Denied: instance {rt.instance_id}, p: waiting for rate tokens, retry after" in text


def test_waits_for_the_next_token(rt):
    rt.permit("p").release(), rt.permit("p").release()
    with rt.permit("p", timeout=5) as p:
        assert p.waited_s > 0.5


def test_cancel_ends_the_wait_and_leaves_the_queue(rt):
    rt.permit("p").release(), rt.permit("p").release()
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    with pytest.raises(Cancelled):
        rt.permit("p", cancel=cancel)
    assert rt.status()["concurrency"]["waiting"] == 0


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


def test_impossible_request_is_refused(tmp_path):
    cfg = make_config(tmp_path / "s", tokens_per_minute=1000, token_burst=100)
    with Runtime.start(cwd=tmp_path, config=cfg) as rt, pytest.raises(PermitRequestError):
        rt.permit("p", tokens=101)


def test_closed_runtime_refuses(tmp_path):
    rt = Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "s"))
    rt.close()
    rt.close()
    with pytest.raises(NotRegisteredError):
        rt.permit("p")


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
        assert a.get_my_parallel_limit() == 3
        assert a.get_total_max_llm() == 6
        a.set_active_model("openai", "gpt-4o")
        b.set_active_model("openai", "gpt-4o")
        assert a.get_active_instances_for_model("openai", "gpt-4o") == 2
        assert a.get_model_parallel_limit("openai", "gpt-4o", 4) == 2
        a.update_workload_info(9)
        assert b.get_dynamic_parallel_limit(0) == 1
        assert a.get_dynamic_parallel_limit(9) == 5
        status = a.get_coordinator_status()
        assert status["activeInstanceCount"] == 2 and status["myInstanceId"] == "one"
        assert a.is_coordinator_initialized()
        with a.permit("p"):
            view = a.status()
        mine = [i for i in view["instances"] if i["instanceId"] == "one"][0]
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


@pytest.mark.parametrize("kwargs, fragment", [
    ({"provider": ""}, "provider must be a name"),
    ({"provider": "open/ai"}, "provider must be a name"),
    ({"provider": "p", "model": ""}, "must not be empty"),
    ({"provider": "p", "model": "gpt\n4"}, "control characters"),
    ({"provider": "p", "tokens": -1}, "tokens must be an integer >= 0"),
    ({"provider": "p", "tokens": 1.5}, "tokens must be an integer >= 0"),
])
def test_bad_permit_arguments_are_named(rt, kwargs, fragment):
    provider = kwargs.pop("provider")
    with pytest.raises(PermitRequestError, match=fragment):
        rt.permit(provider, **kwargs)
    assert rt.try_permit("p") is not None  # nothing was taken by the bad calls
