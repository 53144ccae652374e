"""The permit path, each scenario run both ways: through ``Runtime.permit`` (threads) and
through ``Runtime.apermit`` (asyncio), by one driver, so the two cannot drift apart again
(``permit`` once dropped ``reports=`` and sync callers never got the slow start)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from cross_instance import RateLimitExceeded
from cross_instance.errors import Cancelled, NotRegisteredError, PermitRequestError
from cross_instance.integrations import retry
from cross_instance.integrations.httpx_transport import (
    AsyncCoordinatedTransport,
    CoordinatedTransport,
    coordinated_client,
)
from cross_instance.runtime import Runtime
from cross_instance.runtime.permit import Permit
from tests.helpers_runtime import make_config


class Driver:
    """Runs a permit-path step the way its ``mode`` says: ``sync`` calls the thread API,
    ``async`` the asyncio twin (each step in its own event loop)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def permit(self, rt: Runtime, provider: str, **kw: Any) -> Permit:
        if self.mode == "sync":
            return rt.permit(provider, **kw)
        return asyncio.run(_awaited(rt.apermit(provider, **kw)))

    def release(self, p: Permit) -> None:
        if self.mode == "sync":
            p.release()
        else:
            asyncio.run(p.arelease())

    def report(self, rt: Runtime, p: Permit, *args: Any, **kw: Any) -> None:
        if self.mode == "sync":
            p.report(*args, **kw)
        else:
            asyncio.run(rt.areport(p, *args, **kw))

    @contextlib.contextmanager
    def held(self, rt: Runtime, provider: str, **kw: Any) -> Iterator[Permit]:
        """The ``with`` / ``async with`` form; the body runs between enter and exit."""
        if self.mode == "sync":
            with rt.permit(provider, **kw) as p:
                yield p
            return
        cm = rt.apermit(provider, **kw)
        p = asyncio.run(cm.__aenter__())
        try:
            yield p
        finally:
            asyncio.run(cm.__aexit__(None, None, None))

    def wait_then_cancel(self, rt: Runtime, provider: str, after_s: float) -> None:
        """Wait for a permit and cancel the wait after ``after_s`` (an event for threads,
        ``Task.cancel`` for asyncio); returns when the cancellation ended it."""
        if self.mode == "sync":
            cancel = threading.Event()
            timer = threading.Timer(after_s, cancel.set)
            timer.start()
            with pytest.raises(Cancelled):
                rt.permit(provider, cancel=cancel)
            return

        async def main() -> None:
            task = asyncio.create_task(_awaited(rt.apermit(provider)))
            await asyncio.sleep(after_s)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())


async def _awaited(pending: Any) -> Any:
    return await pending


@pytest.fixture(params=["sync", "async"])
def drive(request) -> Driver:
    return Driver(request.param)


def start(tmp_path, **limits: int) -> Runtime:
    limits.setdefault("rpm", 60)
    limits.setdefault("burst", 2)
    limits.setdefault("total", 2)
    return Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "state", **limits))


@pytest.fixture
def rt(tmp_path):
    with start(tmp_path) as runtime:
        yield runtime


def test_permit_context_and_release(rt, drive):
    with drive.held(rt, "p") as p:
        assert not p.released and rt.status()["activeRequests"] == 1
    assert p.released and rt.status()["activeRequests"] == 0


def test_timeout_that_cannot_be_met_fails_at_once_with_retry_after(rt, drive):
    for _ in range(2):
        drive.release(drive.permit(rt, "p"))
    with pytest.raises(RateLimitExceeded) as err:
        drive.permit(rt, "p", timeout=0.2)  # the next token is a second away: no sleep
    assert err.value.code == "RATE_LIMIT_EXCEEDED"
    assert 0.5 < err.value.retry_after <= 1.0
    assert rt.status()["concurrency"]["waiting"] == 0  # left the queue
    rt.log.flush()
    text = (rt.cwd / ".pi" / "logs" / "coordinator.log").read_text()
    assert f"Denied: instance {rt.instance_id}, p: waiting for rate tokens, retry after" in text


def test_waits_for_the_next_token(rt, drive):
    for _ in range(2):
        drive.release(drive.permit(rt, "p"))
    p = drive.permit(rt, "p", timeout=5)
    assert p.waited_s > 0.5
    drive.release(p)


def test_cancel_ends_the_wait_and_leaves_the_queue(rt, drive):
    for _ in range(2):
        drive.release(drive.permit(rt, "p"))
    drive.wait_then_cancel(rt, "p", 0.1)
    assert rt.status()["concurrency"]["waiting"] == 0


def test_impossible_request_is_refused(tmp_path, drive):
    with start(tmp_path, tokens_per_minute=1000, token_burst=100) as rt, \
            pytest.raises(PermitRequestError):
        drive.permit(rt, "p", tokens=101)


def test_closed_runtime_refuses(tmp_path, drive):
    rt = start(tmp_path)
    rt.close()
    rt.close()
    with pytest.raises(NotRegisteredError):
        drive.permit(rt, "p")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"provider": ""}, "provider must be a name"),
    ({"provider": "open/ai"}, "provider must be a name"),
    ({"provider": "p", "model": ""}, "must not be empty"),
    ({"provider": "p", "model": "gpt\n4"}, "control characters"),
    ({"provider": "p", "tokens": -1}, "tokens must be an integer >= 0"),
    ({"provider": "p", "tokens": 1.5}, "tokens must be an integer >= 0"),
    ({"provider": "p", "timeout": "soon"}, "timeout must be a number of seconds"),
    ({"provider": "p", "reports": None}, "reports must be True or False"),
])
def test_bad_permit_arguments_are_named(rt, drive, kwargs, fragment):
    kwargs = dict(kwargs)  # the parameters are shared by both modes
    provider = kwargs.pop("provider")
    with pytest.raises(PermitRequestError, match=fragment):
        drive.permit(rt, provider, **kwargs)
    assert rt.try_permit("p") is not None  # nothing was taken by the bad calls


# --- slow start: a reporting caller on a bucket nobody has heard about yet -----------------

@pytest.fixture
def roomy(tmp_path):
    """A burst of 10: without the slow start ten calls go at once."""
    with start(tmp_path, rpm=60, burst=10, total=10) as runtime:
        yield runtime


def test_a_reporting_caller_starts_slowly_until_the_first_answer(roomy, drive):
    first = drive.permit(roomy, "p", reports=True)
    with pytest.raises(RateLimitExceeded):  # one interval (1 s) apart while nothing is known
        drive.permit(roomy, "p", reports=True, timeout=0.2)
    drive.report(roomy, first, 200, {"x-ratelimit-limit-requests": "60"})
    drive.release(first)
    second = drive.permit(roomy, "p", reports=True, timeout=0.2)  # the answer ended it
    drive.release(second)


def test_a_caller_that_does_not_report_keeps_the_burst(roomy, drive):
    held = [drive.permit(roomy, "p", timeout=0) for _ in range(5)]
    for p in held:
        drive.release(p)


def test_try_permit_passes_reports_on(roomy):
    first = roomy.try_permit("p", reports=True)
    assert first is not None
    assert roomy.try_permit("p", reports=True) is None  # slow start: not before an interval
    first.release()


def _blocking_handler(entered: threading.Event, go: threading.Event) -> Callable[..., Any]:
    def handle(request: httpx.Request) -> httpx.Response:
        entered.set()
        go.wait(10)
        return httpx.Response(200, json={"ok": True})
    return handle


@pytest.mark.parametrize("how", ["transport", "openai", "retry"])
def test_sync_integrations_get_the_slow_start(roomy, how):
    """While the first call is still out, a second sync call through the integration must
    wait one interval (it fails at once under a 0.2 s timeout) instead of using the burst."""
    entered, go = threading.Event(), threading.Event()
    inner = httpx.MockTransport(_blocking_handler(entered, go))
    results: list[object] = []

    def first_call() -> None:
        if how == "retry":
            results.append(retry.call(roomy, "p", lambda: httpx.Client(transport=inner)
                                      .get("http://fake/v1")))
        else:
            with httpx.Client(transport=CoordinatedTransport(roomy, "p", inner=inner)) as c:
                results.append(c.get("http://fake/v1"))

    t = threading.Thread(target=first_call)
    t.start()
    try:
        assert entered.wait(10)
        with pytest.raises(RateLimitExceeded):
            if how == "openai":
                client = coordinated_client(openai.OpenAI, roomy, "p", timeout=0.2,
                                            api_key="test", base_url="http://127.0.0.1:9/v1",
                                            max_retries=0)
                client.models.list()
            elif how == "retry":
                retry.call(roomy, "p", lambda: None, timeout=0.2)
            else:
                with httpx.Client(transport=CoordinatedTransport(roomy, "p", inner=inner,
                                                                 timeout=0.2)) as c:
                    c.get("http://fake/v1")
    finally:
        go.set()
        t.join(10)
    assert len(results) == 1


def test_async_transport_gets_the_slow_start_too(roomy):
    async def main() -> None:
        entered, go = asyncio.Event(), asyncio.Event()

        async def handle(request: httpx.Request) -> httpx.Response:
            entered.set()
            await go.wait()
            return httpx.Response(200)

        inner = httpx.MockTransport(handle)
        async with httpx.AsyncClient(transport=AsyncCoordinatedTransport(
                roomy, "p", inner=inner)) as c1, httpx.AsyncClient(
                transport=AsyncCoordinatedTransport(roomy, "p", inner=inner, timeout=0.2)) as c2:
            first = asyncio.create_task(c1.get("http://fake/v1"))
            await entered.wait()
            with pytest.raises(RateLimitExceeded):
                await c2.get("http://fake/v1")
            go.set()
            assert (await first).status_code == 200

    asyncio.run(main())
