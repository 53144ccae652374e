"""The gateway's ASGI layer: a request to ``/{provider}/v1/...`` waits for its permit, is
forwarded to the provider, and its answer is passed back as it arrives; every other path
goes on to the daemon's own routes.

Promises:

- Every ``POST`` but a token count takes a permit (provider, the body's ``model``, the
  tokens the body may use) before anything is sent upstream, waiting first come, first
  served with every other client of the store (library callers, API clients, other
  gateways). ``GET``s (model lists) and token counts are forwarded without one: providers
  do not count them against the limits a permit guards.
- A wait longer than ``gateway.maxWaitMs`` (or the client's ``X-Pi-Max-Wait-Ms``) is the
  provider's own 429 with ``Retry-After``, never a hang.
- Status, headers and body pass through unchanged (see ``upstream`` for the headers of one
  hop); an event stream is passed on chunk by chunk as it arrives.
- The permit is held until the answer has been passed on, and released at once when the
  client goes away first: then the upstream request is cancelled (its connection closed).
- The answer is learned from as a library caller's is (429s, ``Retry-After``, rate-limit
  headers) and the tokens reserved are settled with the provider's own usage, read from the
  body or from the last events of a stream.
- The caller's API key goes upstream and nowhere else: it is in no log line, no state and
  no event (instances are named by a keyed hash of it, see ``identity``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cross_instance.core.pricing import usage_of
from cross_instance.core.records import Granted
from cross_instance.core.usage import estimate_parts, usage_from_body
from cross_instance.daemon.disconnect import Watch
from cross_instance.daemon.guard import BodyTooLarge, read_body
from cross_instance.daemon.hosted import Hosted, hosted_of
from cross_instance.daemon.state import Daemon
from cross_instance.errors import (
    BudgetExceeded,
    CrossInstanceError,
    NotRegisteredError,
    PermitRequestError,
    RateLimitExceeded,
)
from cross_instance.gateway.identity import BadInstanceId, Clients, instance_of
from cross_instance.gateway.routing import BadPath, NotConfigured, Route, route_of
from cross_instance.gateway.shapes import error_reply
from cross_instance.gateway.tap import Tap
from cross_instance.gateway.upstream import (
    TIMEOUT,
    UpstreamError,
    Upstreams,
    request_headers,
    response_headers,
)
from cross_instance.runtime.permit_flow import BUDGET_RECHECK_S
from cross_instance.runtime.spending import Reservation


@dataclass(slots=True)
class Answer:
    """What came back from upstream, for the permit's report."""

    status: int
    headers: Mapping[str, str]
    tap: Tap
    complete: bool = False


class Gateway:
    """The gateway routes in front of the daemon's app (``app``)."""

    def __init__(self, app: ASGIApp, daemon: Daemon) -> None:
        self.app = app
        self.daemon = daemon
        self.upstreams = daemon.config.upstream_table()
        self.settings = daemon.config.gateway_settings()
        self.clients = Clients(daemon)
        self.upstream = Upstreams(self.settings)
        daemon.closers.append(self.upstream.close)  # at shutdown, on the event loop
        self._hosted: Hosted | None = None
        self._bursts: dict[tuple[str, str | None], list[int]] = {}
        self._in_flight: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        try:
            route = route_of(raw, self.upstreams)
        except NotConfigured as err:
            await _reply(send, error_reply("openai", "not_configured", str(err)))
            return
        except BadPath as err:
            await _reply(send, error_reply("openai", "invalid_request", str(err)))
            return
        if route is None:
            await self.app(scope, receive, send)
            return
        await self._serve(route, scope, receive, send)

    @property
    def hosted(self) -> Hosted:
        if self._hosted is None:
            self._hosted = hosted_of(self.daemon)
        return self._hosted

    async def _serve(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.hosted.metrics
        in_flight = self._in_flight.get(route.provider)
        if in_flight is None:  # one series per configured provider
            in_flight = self._in_flight[route.provider] = metrics.gateway_in_flight.labels(
                route.provider)
        sent = [0]  # the status the client got

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent[0] = message["status"]
            await send(message)

        in_flight.inc()
        try:
            model = await self._answer(route, scope, receive, sending)
        finally:
            in_flight.dec()
        if sent[0]:
            metrics.gateway_answered(route.provider, model, sent[0])

    async def _answer(self, route: Route, scope: Scope, receive: Receive, send: Send
                      ) -> str | None:
        """Answer the request; the model it named."""
        api = route.upstream.api
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        try:
            body = await read_body(receive)
        except BodyTooLarge as err:
            await _reply(send, error_reply(api, "too_large", str(err)))
            return None
        if body is None:
            return None  # the client left before its request was whole: nothing to do
        client_host = scope["client"][0] if scope.get("client") else "unknown"
        try:
            instance_id = instance_of(headers, client_host)
        except BadInstanceId as err:
            await _reply(send, error_reply(api, "invalid_request", str(err)))
            return None
        takes_permit = scope["method"] == "POST" and not route.rest.endswith("count_tokens")
        parsed = _json(body) if takes_permit else None
        model = parsed.get("model") if isinstance(parsed, dict) else None
        model = model if isinstance(model, str) else None
        try:
            await self.clients.ensure(instance_id, client_host)
        except CrossInstanceError as err:
            await _reply(send, error_reply(api, "unavailable", f"pi-xi gateway: {err}"))
            return model
        self.clients.calling(instance_id, 1)
        granted: Granted | None = None
        reservation: Reservation | None = None
        tokens = 0
        answers: list[Answer] = []
        release = _Release(self.hosted, instance_id, None)
        watch = Watch(receive)  # a client that leaves cancels what this task waits for
        try:
            if takes_permit:
                got = await self._permit(route, instance_id, client_host, model, parsed,
                                         headers, send)
                if got is None:
                    return model
                granted, reservation, tokens = got
            release = _Release(self.hosted, instance_id, granted)
            await self._forward(route, scope, body, send, release, watch, answers)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not watch.gone or task is None:
                raise
            task.uncancel()  # the client went: its permit and upstream request end here
        finally:
            watch.stop()
            self.clients.calling(instance_id, -1)
            if granted is not None:
                await release()
                await self._settle(route, instance_id, granted,
                                   answers[0] if answers else None, reservation, tokens)
        return model

    async def _permit(self, route: Route, instance_id: str, client_host: str,
                      model: str | None, parsed: Any, headers: list[tuple[bytes, bytes]],
                      send: Send) -> tuple[Granted, Reservation | None, int] | None:
        """The permit, the spend budgets' reservation and the tokens reserved in the token
        buckets; None when the client has had its answer (a 429 after the bounded wait, a
        budget without room, a bad request)."""
        api = route.upstream.api
        bursts = self._token_bursts(route.provider, model)
        parts = estimate_parts(parsed)
        tokens = None if parts is None or not bursts else min(sum(parts), *bursts)
        try:
            plan = self.hosted.plan(instance_id, route.provider, model, tokens, reports=True)
        except PermitRequestError as err:
            await _reply(send, error_reply(api, "invalid_request", f"pi-xi gateway: {err}"))
            return None
        max_wait_s = self.settings.max_wait_ms / 1000
        asked = _header(headers, b"x-pi-max-wait-ms")
        if asked is not None:
            try:
                max_wait_s = min(max_wait_s, max(0.0, float(asked) / 1000))
            except ValueError:
                await _reply(send, error_reply(api, "invalid_request",
                                               "X-Pi-Max-Wait-Ms must be a number"))
                return None
        deadline = time.monotonic() + max_wait_s
        reserved = await self._reserve(route, instance_id, model, parts or (0, 0), deadline,
                                       send)
        if reserved is False:
            return None
        reservation = reserved if isinstance(reserved, Reservation) else None
        granted: Granted | None = None
        try:
            for attempt in range(2):
                try:
                    got, _ = await self.hosted.acquire(
                        plan, max(0.0, deadline - time.monotonic()), None, [])
                    granted = got
                    return got, reservation, tokens or 0
                except RateLimitExceeded as err:
                    await _reply(send, error_reply(
                        api, "rate_limited",
                        f"pi-xi gateway: no permit for {err.provider}"
                        f"{'' if err.model is None else '/' + err.model} within "
                        f"{max_wait_s:g}s ({err.reason}); retry after {err.retry_after:.3f}s",
                        err.retry_after))
                    return None
                except NotRegisteredError:  # reaped between two calls: join again, once
                    if attempt:
                        raise
                    await self.clients.register(instance_id, client_host)
                except CrossInstanceError as err:
                    await _reply(send, error_reply(api, "unavailable",
                                                   f"pi-xi gateway: {err}"))
                    return None
            return None
        finally:
            if granted is None and reservation is not None and self.hosted.spending:
                with contextlib.suppress(CrossInstanceError):
                    await self.daemon.call(self.hosted.spending.refund, reservation)

    def _token_bursts(self, provider: str, model: str | None) -> list[int]:
        """The bursts of the token buckets a call to ``provider``/``model`` takes from."""
        found = self._bursts.get((provider, model))
        if found is None:
            found = self.daemon.config.resolve(provider, model).token_bursts
            if len(self._bursts) < 4096:
                self._bursts[(provider, model)] = found
        return found

    async def _reserve(self, route: Route, instance_id: str, model: str | None,
                       parts: tuple[int, int], deadline: float, send: Send
                       ) -> Reservation | bool:
        """The spend budgets' reservation (True when no budget applies), or False when the
        client has had its answer: the provider's 429 when a budget has no room (with
        ``Retry-After`` when the next period would have it), after waiting within the bound
        when ``budgets.onExceed`` is ``wait``."""
        spending = self.hosted.spending
        if spending is None or not spending.applies(route.provider):
            return True
        api = route.upstream.api
        while True:
            try:
                found = await self.daemon.call(spending.reserve, route.provider, model,
                                               parts[0], parts[1], instance_id)
                return found if found is not None else True
            except BudgetExceeded as err:
                left = deadline - time.monotonic()
                if err.retry_after is None or err.retry_after > left:
                    await _reply(send, error_reply(api, "budget_exceeded",
                                                   f"pi-xi gateway: {err}", err.retry_after))
                    return False
                await asyncio.sleep(min(err.retry_after, left, BUDGET_RECHECK_S))
            except CrossInstanceError as err:
                await _reply(send, error_reply(api, "unavailable", f"pi-xi gateway: {err}"))
                return False

    async def _forward(self, route: Route, scope: Scope, body: bytes, send: Send,
                       release: _Release, watch: Watch, answers: list[Answer]) -> None:
        """Send the request upstream and pass its answer back (into ``answers`` once it
        starts: none when the upstream never answered). The permit is released before the
        answer's last byte goes out, so a client's next request never finds its last permit
        still held."""
        url = route.url
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        api = route.upstream.api
        try:
            response = await self.upstream.send(scope["method"], url,
                                                request_headers(scope["headers"]), body)
        except TIMEOUT:
            await release()
            await _reply(send, error_reply(api, "upstream_timeout", (
                f"pi-xi gateway: {route.provider} did not answer within "
                f"{self.settings.upstream_timeout_ms / 1000:g}s")))
            return
        except UpstreamError as err:
            self.daemon.log("Gateway: %s unreachable: %s", route.provider, type(err).__name__)
            await release()
            await _reply(send, error_reply(api, "upstream_unreachable", (
                f"pi-xi gateway: cannot reach {route.provider} ({type(err).__name__})")))
            return
        got = Answer(response.status, response.headers, Tap())
        answers.append(got)
        try:
            length = response.content_length  # None: chunked, passed on as it comes
            await send({"type": "http.response.start", "status": response.status,
                        "headers": response_headers(response.raw_headers, length is None)})
            seen = 0
            last = b""
            async for chunk in response.content.iter_any():
                got.tap.see(chunk)
                seen += len(chunk)
                if length is not None and seen >= length:
                    last = chunk  # the whole body is in: it goes out with the end
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await release()
            watch.stop()  # the answer is whole: a client leaving now cancels nothing
            await send({"type": "http.response.body", "body": last, "more_body": False})
            got.complete = True
        finally:
            if got.complete:
                response.release()  # the connection goes back to the pool
            else:
                response.close()  # cut short: the upstream request is cancelled

    async def _settle(self, route: Route, instance_id: str, granted: Granted,
                      answer: Answer | None, reservation: Reservation | None,
                      tokens: int) -> None:
        """Learn from the answer and settle its cost (also when the client went before its
        end: then the usage is not known and the estimate stays). The usage is read only
        when something needs it: ``tokens`` reserved in token buckets, or budgets."""
        spending = self.hosted.spending
        try:
            if answer is None:  # never reached the provider: nothing to learn or to pay
                if reservation is not None and spending is not None:
                    await self.daemon.call(spending.refund, reservation)
                return
            status = answer.status
            usage = detail = None
            if status >= 400:
                usage = 0  # refused or failed: the provider counted no tokens for it
            elif answer.complete and (tokens or spending is not None):
                kept, kind = answer.tap.body(), answer.headers.get("content-type", "")
                usage = usage_from_body(kept, kind)
                detail = usage_of(kept, kind) if spending is not None else None
            body = answer.tap.body().decode("utf-8", "replace") if status >= 400 else None
            await self.hosted.report(instance_id, granted.permit_id, status,
                                     dict(answer.headers), usage, body, detail, reservation)
        except CrossInstanceError as err:
            self.daemon.log("Gateway: learning from %s's answer failed: %s",
                            route.provider, err)


class _Release:
    """Releases a permit once, however many ways the request ends."""

    def __init__(self, hosted: Hosted, instance_id: str, granted: Granted | None) -> None:
        self.hosted, self.instance_id, self.granted = hosted, instance_id, granted

    async def __call__(self) -> None:
        granted, self.granted = self.granted, None
        if granted is not None:
            with contextlib.suppress(CrossInstanceError):
                await self.hosted.release(self.instance_id, [granted.permit_id])


def _json(body: bytes) -> Any:
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


async def _reply(send: Send, reply: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
    status, headers, body = reply
    with contextlib.suppress(OSError):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


__all__ = ["Gateway"]
