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
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cross_instance.core.pricing import usage_of
from cross_instance.core.records import Granted
from cross_instance.core.usage import usage_from_body
from cross_instance.daemon.disconnect import ClientGone, until_disconnect
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
from cross_instance.gateway.estimate import request_parts
from cross_instance.gateway.identity import BadInstanceId, Clients, instance_of
from cross_instance.gateway.routing import BadPath, NotConfigured, Route, route_of
from cross_instance.gateway.shapes import error_reply
from cross_instance.gateway.tap import Tap
from cross_instance.gateway.upstream import new_client, request_headers, response_headers
from cross_instance.runtime.permit_flow import BUDGET_RECHECK_S
from cross_instance.runtime.spending import Reservation


@dataclass(slots=True)
class Answer:
    """What came back from upstream, for the permit's report."""

    status: int
    headers: httpx.Headers
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
        self._http: httpx.AsyncClient | None = None
        self._hosted: Hosted | None = None

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

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = new_client(self.settings)
        return self._http

    async def _serve(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.hosted.metrics
        in_flight = metrics.gateway_in_flight.labels(route.provider)
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
        answer: Answer | None = None
        release = _Release(self.hosted, instance_id, None)
        try:
            if takes_permit:
                got = await self._permit(route, instance_id, client_host, model, parsed,
                                         headers, receive, send)
                if got is None:
                    return model
                granted, reservation = got
            release = _Release(self.hosted, instance_id, granted)
            answer = await self._forward(route, scope, body, receive, send, release)
        finally:
            self.clients.calling(instance_id, -1)
            if granted is not None:
                await release()
                await self._settle(route, instance_id, granted, answer, reservation)
        return model

    async def _permit(self, route: Route, instance_id: str, client_host: str,
                      model: str | None, parsed: Any, headers: list[tuple[bytes, bytes]],
                      receive: Receive, send: Send
                      ) -> tuple[Granted, Reservation | None] | None:
        """The permit and the spend budgets' reservation, or None when the client has had
        its answer (a 429 after the bounded wait, a budget without room, a bad request) or
        has gone."""
        api = route.upstream.api
        cfg = self.daemon.config
        limits = cfg.resolve(route.provider, model)
        bursts = [s.burst for s in (limits.tokens, limits.model_tokens) if s is not None]
        parts = request_parts(parsed)
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
                                       receive, send)
        if reserved is False:
            return None
        reservation = reserved if isinstance(reserved, Reservation) else None
        granted: Granted | None = None
        try:
            for attempt in range(2):
                try:
                    got, _ = await until_disconnect(self.hosted.acquire(
                        plan, max(0.0, deadline - time.monotonic()), None, []), receive)
                    granted = got
                    return got, reservation
                except RateLimitExceeded as err:
                    await _reply(send, error_reply(
                        api, "rate_limited",
                        f"pi-xi gateway: no permit for {err.provider}"
                        f"{'' if err.model is None else '/' + err.model} within "
                        f"{max_wait_s:g}s ({err.reason}); retry after {err.retry_after:.3f}s",
                        err.retry_after))
                    return None
                except ClientGone:
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

    async def _reserve(self, route: Route, instance_id: str, model: str | None,
                       parts: tuple[int, int], deadline: float, receive: Receive, send: Send
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
                try:
                    await until_disconnect(asyncio.sleep(min(err.retry_after, left,
                                                             BUDGET_RECHECK_S)), receive)
                except ClientGone:
                    return False
            except CrossInstanceError as err:
                await _reply(send, error_reply(api, "unavailable", f"pi-xi gateway: {err}"))
                return False

    async def _forward(self, route: Route, scope: Scope, body: bytes, receive: Receive,
                       send: Send, release: _Release) -> Answer | None:
        """Send the request upstream and pass its answer back; the answer (None when the
        upstream never answered). The permit is released before the answer's last byte
        goes out, so a client's next request never finds its last permit still held."""
        url = route.url
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        request = self.http.build_request(scope["method"], url,
                                          headers=request_headers(scope["headers"]),
                                          content=body)
        api = route.upstream.api
        answer: list[Answer] = []

        async def relay() -> None:
            try:
                response = await self.http.send(request, stream=True)
            except httpx.TimeoutException:
                await release()
                await _reply(send, error_reply(api, "upstream_timeout", (
                    f"pi-xi gateway: {route.provider} did not answer within "
                    f"{self.settings.upstream_timeout_ms / 1000:g}s")))
                return
            except httpx.HTTPError as err:
                self.daemon.log("Gateway: %s unreachable: %s", route.provider,
                                type(err).__name__)
                await release()
                await _reply(send, error_reply(api, "upstream_unreachable", (
                    f"pi-xi gateway: cannot reach {route.provider} ({type(err).__name__})")))
                return
            try:
                got = Answer(response.status_code, response.headers, Tap())
                answer.append(got)
                streamed = "content-length" not in response.headers
                await send({"type": "http.response.start", "status": response.status_code,
                            "headers": response_headers(response.headers.raw, streamed)})
                async for chunk in response.aiter_raw():
                    got.tap.see(chunk)
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
                await release()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                got.complete = True
            finally:
                await response.aclose()  # a cancelled relay closes the upstream connection

        try:
            await until_disconnect(relay(), receive)
        except ClientGone:
            pass
        return answer[0] if answer else None

    async def _settle(self, route: Route, instance_id: str, granted: Granted,
                      answer: Answer | None, reservation: Reservation | None) -> None:
        """Learn from the answer and settle its cost (also when the client went before its
        end: then the usage is not known and the estimate stays)."""
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
            elif answer.complete:
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
