"""HTTP/1.1 front end of the fake provider: routing, keep-alive, JSON and chunked SSE answers.

Routes: ``POST /v1/chat/completions`` (OpenAI), ``POST /v1/messages`` (Anthropic),
``GET /stats`` (``?events=1`` adds the event log), ``POST /reset``, ``GET /health``.
Anything else is a JSON 404. Each connection has its own thread, so latency sleeps of one
client never hold up another.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from cross_instance.testing.fakeprovider import responses as rs
from cross_instance.testing.fakeprovider.headers import (
    HeaderStyle,
    ratelimit_headers,
    retry_headers,
)
from cross_instance.testing.fakeprovider.limits import Decision, Limits
from cross_instance.testing.fakeprovider.stats import StatsRecorder

ROUTES: dict[str, rs.Api] = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}


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
        """Register the connection so :meth:`ProviderHTTPServer.drop_connections` can end it."""
        super().setup()
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

    def do_GET(self) -> None:
        """``/stats`` and ``/health``; others 404."""
        self._read_body()
        url = urlsplit(self.path)
        if url.path == "/stats":
            flag = parse_qs(url.query).get("events", ["0"])[0].lower()
            want = flag in ("1", "true", "yes")
            self._send_json(200, self.server.backend.stats(want))
        elif url.path == "/health":
            self._send_json(200, {"ok": True})
        else:
            self._not_found(url.path)

    def do_POST(self) -> None:
        """The two completion endpoints and ``/reset``; others 404."""
        raw = self._read_body()
        path = urlsplit(self.path).path
        if path == "/reset":
            self.server.backend.reset_stats()
            self._send_json(200, {"ok": True})
        elif path in ROUTES:
            self._complete(ROUTES[path], raw)
        else:
            self._not_found(path)

    def _complete(self, api: rs.Api, raw: bytes) -> None:
        backend = self.server.backend
        client = self.headers.get("x-client-id") or "anonymous"
        try:
            body = rs.parse_request(api, raw)
            cost = self._token_override()
        except rs.BadRequest as exc:
            backend.recorder.record(client, 400, time.monotonic_ns())
            self._send_json(400, rs.error_body(api, 400, str(exc)))
            return
        if cost is None:
            cost = rs.token_cost(body)
        decision = backend.limits.decide(cost)
        wall_now = time.time_ns()
        status = 200 if decision.admitted else 429
        backend.recorder.record(client, status, decision.now_ns)
        headers = ratelimit_headers(backend.header_style, decision.requests, decision.tokens,
                                    wall_now)
        if not decision.admitted:
            headers.update(retry_headers(backend.header_style, decision.wait_ns,
                                         backend.retry_after))
            self._send_json(429, rs.error_body(api, 429, _reject_message(decision)), headers)
            return
        self._answer(api, body, headers, backend.draw_latency())

    def _answer(self, api: rs.Api, body: dict[str, Any], headers: dict[str, str],
                latency: float) -> None:
        rid, model = rs.new_id(api), str(body["model"])
        n_prompt = rs.prompt_tokens(body)
        pieces, truncated = rs.reply_pieces(rs.max_tokens_of(body))
        headers["x-request-id" if api == "openai" else "request-id"] = rid
        if not body.get("stream"):
            time.sleep(latency)
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

    def _token_override(self) -> int | None:
        value = self.headers.get("x-fake-tokens")
        if value is None:
            return None
        try:
            tokens = int(value)
        except ValueError:
            tokens = -1
        if tokens < 0:
            raise rs.BadRequest(f"x-fake-tokens must be a non-negative integer, got {value!r}")
        return tokens

    def _read_body(self) -> bytes:
        length = self.headers.get("content-length")
        try:
            n = int(length) if length else 0
        except ValueError:
            n = 0
        return self.rfile.read(n) if n > 0 else b""

    def _not_found(self, path: str) -> None:
        api: rs.Api = "anthropic" if path.startswith("/v1/messages") else "openai"
        self._send_json(404, rs.error_body(api, 404, f"no route for {self.command} {path}"))

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, frames: list[bytes], headers: dict[str, str], latency: float) -> None:
        """Send ``frames`` chunked, spreading ``latency`` evenly before each frame."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()
        gap = latency / len(frames) if frames else 0.0
        try:
            for frame in frames:
                if gap > 0:
                    time.sleep(gap)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True


def _reject_message(decision: Decision) -> str:
    if decision.wait_ns is None:
        return (f"Request too large: {decision.cost} tokens can never fit in the token bucket; "
                f"lower max_tokens or the prompt.")
    return (f"Rate limit reached (fake provider): retry in "
            f"{decision.wait_ns / 1e9:.3f}s.")
