"""Coordinated ``httpx`` transports: every request waits for a permit, reports its response,
and holds the permit until the response is closed (a stream holds it to its end).

Where the provider has a tokens-per-minute limit, the permit reserves the request's estimated
tokens (``core.usage.estimate_tokens``, capped at the bucket's burst) and, when the response
ends, settles them with the ``usage`` the provider returned (JSON or event stream): the user
writes neither number.

The official SDKs take an httpx client, so one line makes them coordinated::

    client = coordinated_client(openai.OpenAI, rt, "openai", api_key=...)
    client = coordinated_client(anthropic.AsyncAnthropic, rt, "anthropic")
    http = httpx.Client(transport=CoordinatedTransport(rt, "deepseek"))

The transports implement httpx's documented transport interface and wrap the user's own
(``inner``, default the library's) rather than replacing it. Some SDK releases ship httpx under
another package name (``httpx2``); ``transports_for(module)`` builds the same pair for it, and
``coordinated_client`` picks the one the SDK uses.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

import httpx

from cross_instance.core.usage import estimate_tokens, usage_from_body
from cross_instance.runtime import Runtime
from cross_instance.runtime.permit import Permit

ModelOf = Callable[[Any], str | None]
CAPTURE_LIMIT = 4 << 20  # response bytes kept to read the usage from; longer: not settled


def _json_body(request: Any) -> Any:
    if "json" not in request.headers.get("content-type", ""):
        return None
    try:
        return json.loads(request.content or b"null")
    except Exception:  # noqa: BLE001 - unread or non-JSON bodies carry nothing
        return None


def model_from_json_body(request: Any) -> str | None:
    """The ``model`` field of a JSON request body (OpenAI, Anthropic, DeepSeek), if any."""
    data = _json_body(request)
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) and model else None


def tokens_to_reserve(runtime: Runtime, provider: str, model: str | None,
                      request: Any) -> int | None:
    """The request's estimated tokens when ``provider`` (or the model) has a token limit,
    capped at the smallest token burst (a bigger reservation could never be granted)."""
    bursts = runtime.config.resolve(provider, model).token_bursts
    if not bursts:
        return None
    estimate = estimate_tokens(_json_body(request))
    return None if estimate is None else min(estimate, *bursts)


class _Settlement:
    """The response bytes seen so far, read for the provider's ``usage`` when it ends."""

    def __init__(self, permit: Permit, status: int, content_type: str) -> None:
        self.permit, self.status, self.content_type = permit, status, content_type
        self.seen: bytearray | None = bytearray() if permit.tokens else None

    def see(self, chunk: bytes) -> None:
        if self.seen is not None:
            self.seen += chunk
            if len(self.seen) > CAPTURE_LIMIT:
                self.seen = None

    def used(self) -> int | None:
        if not self.permit.tokens:
            return None
        if self.status >= 400:
            return 0  # refused or failed: the provider counted no tokens for it
        return None if self.seen is None else usage_from_body(bytes(self.seen),
                                                              self.content_type)


class _Coordinated:
    """What the sync and async transports share: their settings, the permit a request asks
    for, and the settlement of its response (httpx's own transports show that the I/O itself
    cannot be shared)."""

    def __init__(self, runtime: Runtime, provider: str, inner: Any, model_of: ModelOf,
                 timeout: float | None) -> None:
        self.runtime, self.provider, self.inner = runtime, provider, inner
        self.model_of, self.timeout = model_of, timeout

    def permit_args(self, request: Any) -> dict[str, Any]:
        model = self.model_of(request)
        return {"model": model, "timeout": self.timeout, "reports": True,
                "tokens": tokens_to_reserve(self.runtime, self.provider, model, request)}

    @staticmethod
    def settlement(permit: Permit, response: Any) -> _Settlement:
        return _Settlement(permit, response.status_code,
                           response.headers.get("content-type", ""))


@functools.cache
def transports_for(hx: ModuleType) -> tuple[type[Any], type[Any]]:
    """(sync, async) coordinated transport classes for an httpx-compatible module."""

    class HeldStream(hx.SyncByteStream):  # type: ignore[name-defined, misc]
        def __init__(self, inner: Any, permit: Permit, settle: _Settlement) -> None:
            self._inner, self._permit, self._settle = inner, permit, settle

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self._inner:
                self._settle.see(chunk)
                yield chunk

        def close(self) -> None:
            try:
                self._inner.close()
                used = self._settle.used()
                if used is not None:
                    self._permit.report(usage_tokens=used)
            finally:
                self._permit.release()

    class AsyncHeldStream(hx.AsyncByteStream):  # type: ignore[name-defined, misc]
        def __init__(self, inner: Any, permit: Permit, settle: _Settlement,
                     runtime: Runtime) -> None:
            self._inner, self._permit, self._settle = inner, permit, settle
            self._runtime = runtime

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._inner:
                self._settle.see(chunk)
                yield chunk

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
                used = self._settle.used()
                if used is not None:
                    await self._runtime.areport(self._permit, None, None, used)
            finally:
                await self._permit.arelease()

    class Transport(_Coordinated, hx.BaseTransport):  # type: ignore[name-defined, misc]
        """Sync transport for ``provider``; ``model_of`` picks the model of a request,
        ``timeout`` bounds the wait for a permit (``RateLimitExceeded`` after it)."""

        def __init__(self, runtime: Runtime, provider: str, *, inner: Any = None,
                     model_of: ModelOf = model_from_json_body,
                     timeout: float | None = None) -> None:
            super().__init__(runtime, provider,
                             inner if inner is not None else hx.HTTPTransport(),
                             model_of, timeout)

        def handle_request(self, request: Any) -> Any:
            permit = self.runtime.permit(self.provider, **self.permit_args(request))
            try:
                response = self.inner.handle_request(request)
            except BaseException:
                permit.release()
                raise
            permit.report(response.status_code, response.headers)
            response.stream = HeldStream(response.stream, permit,
                                         self.settlement(permit, response))
            return response

        def close(self) -> None:
            self.inner.close()

    class AsyncTransport(_Coordinated, hx.AsyncBaseTransport):  # type: ignore[name-defined, misc]
        """The asyncio twin of the sync transport."""

        def __init__(self, runtime: Runtime, provider: str, *, inner: Any = None,
                     model_of: ModelOf = model_from_json_body,
                     timeout: float | None = None) -> None:
            super().__init__(runtime, provider,
                             inner if inner is not None else hx.AsyncHTTPTransport(),
                             model_of, timeout)

        async def handle_async_request(self, request: Any) -> Any:
            permit = await self.runtime.apermit(self.provider, **self.permit_args(request))
            try:
                response = await self.inner.handle_async_request(request)
            except BaseException:
                await permit.arelease()
                raise
            await self.runtime.areport(permit, response.status_code, response.headers)
            response.stream = AsyncHeldStream(response.stream, permit,
                                              self.settlement(permit, response), self.runtime)
            return response

        async def aclose(self) -> None:
            await self.inner.aclose()

    Transport.__name__ = Transport.__qualname__ = "CoordinatedTransport"
    AsyncTransport.__name__ = AsyncTransport.__qualname__ = "AsyncCoordinatedTransport"
    return Transport, AsyncTransport


CoordinatedTransport, AsyncCoordinatedTransport = transports_for(httpx)


def coordinated_client(sdk_client: type[Any], runtime: Runtime, provider: str, *,
                       timeout: float | None = None, **client_kwargs: Any) -> Any:
    """An SDK client (``openai.OpenAI``, ``anthropic.AsyncAnthropic``, ...) whose every
    request takes a permit from ``runtime`` for ``provider`` and reports its response."""
    sdk = importlib.import_module(sdk_client.__module__.partition(".")[0])
    is_async = sdk_client.__name__.startswith("Async")
    http_cls = getattr(sdk, "DefaultAsyncHttpxClient" if is_async else "DefaultHttpxClient")
    roots = (c.__module__.partition(".")[0] for c in http_cls.__mro__)
    hx = importlib.import_module(next(r for r in roots if r.startswith("httpx")))
    sync_cls, async_cls = transports_for(hx)
    transport = (async_cls if is_async else sync_cls)(runtime, provider, timeout=timeout)
    return sdk_client(http_client=http_cls(transport=transport), **client_kwargs)
