"""HTTP/1.1 front end of the fake provider: routing, keep-alive, JSON and chunked SSE answers.

Rate-limited routes (each answer counted in ``stats()``; latency applies to admitted ones):
``POST /v1/chat/completions`` and ``POST /v1/responses`` (OpenAI, streamed with
``stream: true``), ``POST /v1/embeddings`` (OpenAI), ``POST /v1/messages`` (Anthropic, streamed
with ``stream: true``). Free routes, answered at once: ``GET /v1/models`` and
``GET /v1/models/{id}`` (OpenAI shapes, Anthropic's for requests with ``anthropic-version``),
``POST /v1/messages/count_tokens`` (Anthropic). Control: ``GET /stats`` (``?events=1`` adds
the event log), ``POST /reset``, ``GET /health``. Anything else is a JSON 404.

Request headers read: ``x-client-id`` (whom ``stats()`` counts the answer for),
``x-fake-tokens`` (the token cost to charge instead of the estimate) and ``x-fake-latency-ms``
(the latency of this request instead of the configured one); a bad value of either of the
last two is a 400 in the provider's error shape. The API key of every non-control request
(``Authorization: Bearer KEY`` or ``x-api-key: KEY``) is recorded for ``stats()["apiKeys"]``.
Each connection has its own thread, so latency sleeps of one client never hold up another.
"""

from __future__ import annotations

import email.message
import email.utils
import functools
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from cross_instance.testing.fakeprovider import embeddings as em
from cross_instance.testing.fakeprovider import models
from cross_instance.testing.fakeprovider import responses as rs
from cross_instance.testing.fakeprovider import responses_api as ra
from cross_instance.testing.fakeprovider.headers import (
    HeaderStyle,
    ratelimit_headers,
    retry_headers,
)
from cross_instance.testing.fakeprovider.limits import Decision, Limits
from cross_instance.testing.fakeprovider.request_head import (
    HeadError,
    first_values,
    read_header_lines,
)
from cross_instance.testing.fakeprovider.stats import StatsRecorder

Kind = Literal["chat", "responses", "embeddings", "messages"]

# rate-limited routes: path -> (error/header flavour, kind, body check, token cost estimate)
ROUTES: dict[str, tuple[rs.Api, Kind, Callable[[bytes], dict[str, Any]],
                        Callable[[dict[str, Any]], int]]] = {
    "/v1/chat/completions": ("openai", "chat", lambda raw: rs.parse_request("openai", raw),
                             rs.token_cost),
    "/v1/responses": ("openai", "responses", ra.parse_request, ra.token_cost),
    "/v1/embeddings": ("openai", "embeddings", em.parse_request, em.token_cost),
    "/v1/messages": ("anthropic", "messages", lambda raw: rs.parse_request("anthropic", raw),
                     rs.token_cost),
}
COUNT_TOKENS = "/v1/messages/count_tokens"
MODELS = "/v1/models"
MAX_LATENCY_MS = 3_600_000


class Backend(Protocol):
    """What the handler needs from the provider that owns the server."""

    limits: Limits
    recorder: StatsRecorder
    header_style: HeaderStyle
    retry_after: bool

    def draw_latency(self) -> float:
        """Seconds to wait before answering an admitted request."""
        ...

    def stats(self, events: bool = False) -> dict[str, Any]:
        """JSON-ready statistics."""
        ...

    def reset_stats(self) -> None:
        """Clear statistics."""
        ...


class ProviderHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its backend and can drop all open connections."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        """Bind and listen on ``address``."""
        self.backend = backend
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, ProviderHandler)

    def track(self, conn: socket.socket, alive: bool) -> None:
        """Remember (or forget) an open client connection."""
        with self._conns_lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    def drop_connections(self) -> None:
        """Shut down every open client connection (used when stopping)."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that went away; report anything else."""
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class ProviderHandler(BaseHTTPRequestHandler):
    """One client connection; serves requests until the client closes it."""

    protocol_version = "HTTP/1.1"
    server: ProviderHTTPServer
    server_version = "fake-provider/1"
    sys_version = ""

    def setup(self) -> None:
        """Register the connection so :meth:`ProviderHTTPServer.drop_connections` can end it;
        send small writes (stream frames) at once instead of waiting for the peer's ACK."""
        super().setup()
        self.fields, self._pairs, self._message = {}, [], None
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.track(self.connection, True)

    def finish(self) -> None:
        """Unregister the connection."""
        self.server.track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging."""

    # -- request head: a lean fast path for ordinary requests ------------------------------

    raw_requestline: bytes
    fields: dict[str, str]
    _pairs: list[tuple[str, str]]
    _message: email.message.Message | None

    def parse_request(self) -> bool:
        """Parse the request line and headers like ``BaseHTTPRequestHandler.parse_request``,
        but read the headers of an ordinary ``METHOD PATH HTTP/1.x`` request with
        :func:`read_header_lines` instead of the ``email`` parser; any other request line goes
        to the standard method. Afterwards :attr:`fields` maps lower-case names to values."""
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.1", "HTTP/1.0"):
            return super().parse_request()
        self.requestline = requestline
        self.command, path, self.request_version = words
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        self.close_connection = True
        try:
            pairs = read_header_lines(self.rfile)
        except HeadError as err:
            self.send_error(431, err.message, err.explain)
            return False
        self._pairs, self._message, self.fields = pairs, None, first_values(pairs)
        conntype = self.fields.get("connection", "").lower()
        if self.request_version == "HTTP/1.1":
            self.close_connection = conntype == "close"
            if self.fields.get("expect", "").lower() == "100-continue":
                return self.handle_expect_100()
        else:
            self.close_connection = conntype != "keep-alive"
        return True

    @property
    def headers(self) -> email.message.Message:
        """The request headers as the standard library's message, built on first use."""
        if self._message is None:
            message = http.client.HTTPMessage()
            for name, value in self._pairs:
                message[name] = value
            self._message = message
        return self._message

    @headers.setter
    def headers(self, message: email.message.Message) -> None:
        self._message = message
        self._pairs = [(name, str(value)) for name, value in message.items()]
        self.fields = first_values(self._pairs)

    def do_GET(self) -> None:
        """``/stats``, ``/health``, ``/v1/models`` and ``/v1/models/{id}``; others 404."""
        self._read_body()
        url = urlsplit(self.path)
        path = url.path
        if path == "/stats":
            flag = parse_qs(url.query).get("events", ["0"])[0].lower()
            want = flag in ("1", "true", "yes")
            self._send_json(200, self.server.backend.stats(want))
            return
        if path == "/health":
            self._send_json(200, {"ok": True})
            return
        self._note_key()
        api: rs.Api = "anthropic" if self.fields.get("anthropic-version") else "openai"
        if path == MODELS:
            self.server.backend.recorder.count_route(MODELS)
            self._send_json(200, models.model_list(api))
        elif path.startswith(MODELS + "/") and len(path) > len(MODELS) + 1:
            self.server.backend.recorder.count_route(MODELS + "/{id}")
            model_id = unquote(path[len(MODELS) + 1:])
            found = models.model(api, model_id)
            if found is None:
                self._send_json(404, models.not_found(api, model_id))
            else:
                self._send_json(200, found)
        else:
            self._not_found(path)

    def do_POST(self) -> None:
        """The rate-limited routes, ``count_tokens`` and ``/reset``; others 404."""
        raw = self._read_body()
        path = urlsplit(self.path).path
        if path == "/reset":
            self.server.backend.reset_stats()
            self._send_json(200, {"ok": True})
            return
        self._note_key()
        route = ROUTES.get(path)
        if route is not None:
            self._limited(path, *route, raw)
        elif path == COUNT_TOKENS:
            self.server.backend.recorder.count_route(COUNT_TOKENS)
            try:
                body = rs.parse_count_tokens(raw)
            except rs.BadRequest as exc:
                self._send_json(400, rs.error_body("anthropic", 400, str(exc)))
                return
            self._send_json(200, {"input_tokens": rs.prompt_tokens(body)})
        else:
            self._not_found(path)

    def _limited(self, path: str, api: rs.Api, kind: Kind,
                 parse: Callable[[bytes], dict[str, Any]],
                 estimate: Callable[[dict[str, Any]], int], raw: bytes) -> None:
        backend = self.server.backend
        client = self.fields.get("x-client-id") or "anonymous"
        try:
            body = parse(raw)
            cost = self._header_int("x-fake-tokens", None)
            latency_ms = self._header_int("x-fake-latency-ms", MAX_LATENCY_MS)
        except rs.BadRequest as exc:
            backend.recorder.record(client, 400, time.monotonic_ns(), path)
            self._send_json(400, rs.error_body(api, 400, str(exc)))
            return
        if cost is None:
            cost = estimate(body)
        decision = backend.limits.decide(cost)
        wall_now = time.time_ns()
        status = 200 if decision.admitted else 429
        backend.recorder.record(client, status, decision.now_ns, path)
        headers = ratelimit_headers(backend.header_style, decision.requests, decision.tokens,
                                    wall_now)
        if not decision.admitted:
            headers.update(retry_headers(backend.header_style, decision.wait_ns,
                                         backend.retry_after))
            self._send_json(429, rs.error_body(api, 429, _reject_message(decision)), headers)
            return
        latency = backend.draw_latency() if latency_ms is None else latency_ms / 1000
        if kind == "embeddings":
            headers["x-request-id"] = "req_" + rs.random_hex(32)
            _pause(latency)
            self._send_json(200, em.embedding_list(body), headers)
        elif kind == "responses":
            self._answer_responses(body, headers, latency)
        else:
            self._answer(api, body, headers, latency)

    def _answer(self, api: rs.Api, body: dict[str, Any], headers: dict[str, str],
                latency: float) -> None:
        rid, model = rs.new_id(api), str(body["model"])
        n_prompt = rs.prompt_tokens(body)
        pieces, truncated = rs.reply_pieces(rs.max_tokens_of(body))
        headers["x-request-id" if api == "openai" else "request-id"] = rid
        if not body.get("stream"):
            _pause(latency)
            if api == "openai":
                obj = rs.openai_completion(rid, model, int(time.time()), n_prompt, pieces,
                                           truncated)
            else:
                obj = rs.anthropic_message(rid, model, n_prompt, pieces, truncated)
            self._send_json(200, obj, headers)
            return
        if api == "openai":
            opts = body.get("stream_options")
            usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            frames = rs.openai_stream(rid, model, int(time.time()), n_prompt, pieces,
                                      truncated, usage)
        else:
            frames = rs.anthropic_stream(rid, model, n_prompt, pieces, truncated)
        self._send_stream(frames, headers, latency)

    def _answer_responses(self, body: dict[str, Any], headers: dict[str, str],
                          latency: float) -> None:
        rid, msg_id = ra.new_ids()
        headers["x-request-id"] = rid
        pieces, truncated = rs.reply_pieces(ra.max_output_tokens(body))
        args = (rid, msg_id, int(time.time()), body, ra.prompt_tokens(body), pieces, truncated)
        if body.get("stream"):
            self._send_stream(ra.response_stream(*args), headers, latency)
        else:
            _pause(latency)
            self._send_json(200, ra.response_object(*args), headers)

    def _header_int(self, name: str, maximum: int | None) -> int | None:
        """The non-negative integer in header ``name`` (at most ``maximum``), ``None`` if absent,
        or ``BadRequest``."""
        value = self.fields.get(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            number = -1
        if number < 0 or (maximum is not None and number > maximum):
            upto = "" if maximum is None else f" up to {maximum}"
            raise rs.BadRequest(f"{name} must be a non-negative integer{upto}, got {value!r}")
        return number

    def _note_key(self) -> None:
        recorder = self.server.backend.recorder
        auth = self.fields.get("authorization")
        if auth and auth[:7].lower() == "bearer " and auth[7:].strip():
            recorder.note_key(auth[7:].strip())
        key = self.fields.get("x-api-key")
        if key and key.strip():
            recorder.note_key(key.strip())

    def _read_body(self) -> bytes:
        length = self.fields.get("content-length")
        try:
            n = int(length) if length else 0
        except ValueError:
            n = 0
        return self.rfile.read(n) if n > 0 else b""

    def _not_found(self, path: str) -> None:
        api: rs.Api = "anthropic" if path.startswith("/v1/messages") else "openai"
        self._send_json(404, rs.error_body(api, 404, f"no route for {self.command} {path}"))

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        """Status line, headers and body in one write (one TCP segment for small answers)."""
        data = json.dumps(obj).encode()
        self.wfile.write(self._head(status, headers, "application/json",
                                    f"content-length: {len(data)}\r\n") + data)

    def _send_stream(self, frames: list[bytes], headers: dict[str, str], latency: float) -> None:
        """Send ``frames`` chunked, spreading ``latency`` evenly before each frame."""
        head = self._head(200, headers, "text/event-stream; charset=utf-8",
                          "cache-control: no-cache\r\ntransfer-encoding: chunked\r\n")
        gap = latency / len(frames) if frames else 0.0
        try:
            if gap <= 0:
                self.wfile.write(head + b"".join(_chunk(f) for f in frames) + b"0\r\n\r\n")
                return
            self.wfile.write(head)
            for frame in frames:
                time.sleep(gap)
                self.wfile.write(_chunk(frame))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True

    def _head(self, status: int, headers: dict[str, str] | None, content_type: str,
              extra: str) -> bytes:
        """Status line and header block of an answer: what ``send_response``, ``send_header``
        and ``end_headers`` would write (nothing to an HTTP/0.9 request), built in one go."""
        if self.request_version == "HTTP/0.9":
            return b""
        return _head_bytes(status, headers, content_type, extra)


def _head_bytes(status: int, headers: dict[str, str] | None, content_type: str,
                extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}\r\nServer: fake-provider/1\r\n"
             f"Date: {_http_date(int(time.time()))}\r\ncontent-type: {content_type}\r\n{extra}"]
    if headers:
        lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def _pause(seconds: float) -> None:
    """Sleep ``seconds``; no call at all for 0 (``sleep(0)`` still gives up the GIL)."""
    if seconds > 0:
        time.sleep(seconds)


def _chunk(frame: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(frame), frame)


@functools.cache
def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


@functools.lru_cache(maxsize=2)
def _http_date(unix_s: int) -> str:
    return email.utils.formatdate(unix_s, usegmt=True)


def _reject_message(decision: Decision) -> str:
    if decision.wait_ns is None:
        return (f"Request too large: {decision.cost} tokens can never fit in the token bucket; "
                f"lower max_tokens or the prompt.")
    return (f"Rate limit reached (fake provider): retry in "
            f"{decision.wait_ns / 1e9:.3f}s.")
