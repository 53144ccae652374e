"""Retrying rate-limited calls on the shared cooldown, with tenacity doing the retrying.

The helper keeps no timer of its own: a 429 is reported (so the shared state learns the
cooldown and the lower rate), and the next attempt's permit waits in the fair queue exactly
until the cooldown and the limiter allow it. Our own ``RateLimitExceeded`` (a permit timeout)
is not retried: it already means "not before your deadline".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import tenacity

from cross_instance.core.arguments import check_int, show
from cross_instance.errors import InvalidArgument
from cross_instance.runtime import Runtime
from cross_instance.runtime.feedback import from_error

T = TypeVar("T")


def is_rate_limited(error: BaseException) -> bool:
    """A provider's 429 (from an SDK or httpx exception)."""
    return from_error(error)[0] == 429


def _answer(result: object) -> tuple[int, Any] | None:
    """The HTTP status and headers a call's result carries (an httpx or SDK raw response),
    if any: what both ``call`` and ``acall`` report."""
    status = getattr(result, "status_code", None)
    return (status, getattr(result, "headers", None)) if isinstance(status, int) else None


def _check(fn: object, attempts: object) -> None:
    if not callable(fn):
        raise InvalidArgument(f"fn must be a callable taking no arguments (got {show(fn)})")
    check_int("attempts", attempts, 1)


def _retrying(attempts: int) -> dict[str, Any]:
    return {"stop": tenacity.stop_after_attempt(attempts),
            "retry": tenacity.retry_if_exception(is_rate_limited),
            "wait": tenacity.wait_none(),  # the next permit waits on the shared cooldown
            "reraise": True}


def call(rt: Runtime, provider: str, fn: Callable[[], T], *, model: str | None = None,
         tokens: int | None = None, attempts: int = 5, timeout: float | None = None) -> T:
    """``fn()`` under a permit, retried on 429 up to ``attempts`` times in all."""
    _check(fn, attempts)
    for attempt in tenacity.Retrying(**_retrying(attempts)):
        with attempt, rt.permit(provider, model=model, tokens=tokens, timeout=timeout,
                                reports=True) as p:
            try:
                result = fn()
            except Exception as err:
                p.report(error=err)
                raise
            answer = _answer(result)
            if answer is not None:
                p.report(*answer)
            return result
    raise AssertionError("unreachable: tenacity reraises the last error")


async def acall(rt: Runtime, provider: str, fn: Callable[[], Awaitable[T]], *,
                model: str | None = None, tokens: int | None = None, attempts: int = 5,
                timeout: float | None = None) -> T:
    """The asyncio twin of ``call``."""
    _check(fn, attempts)
    async for attempt in tenacity.AsyncRetrying(**_retrying(attempts)):
        with attempt:
            async with rt.apermit(provider, model=model, tokens=tokens, timeout=timeout,
                                  reports=True) as p:
                try:
                    result = await fn()
                except Exception as err:
                    await rt.areport(p, None, error=err)
                    raise
                answer = _answer(result)
                if answer is not None:
                    await rt.areport(p, *answer)
                return result
    raise AssertionError("unreachable: tenacity reraises the last error")


__all__ = ["acall", "call", "is_rate_limited"]
