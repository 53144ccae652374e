"""``FakeProvider``: a local, rate-limited stand-in for the OpenAI and Anthropic HTTP APIs.

It listens on loopback only, enforces its own exact GCRA limits (requests, and optionally
tokens), answers admitted requests after a configurable latency and over-limit ones at once
with 429 + ``Retry-After``, and records what it answered per client and route and which API
keys reached it. Routes (see :mod:`~cross_instance.testing.fakeprovider.handler`): OpenAI chat
completions, responses, embeddings and models; Anthropic messages and token counting::

    with FakeProvider(requests_per_minute=600, burst=10) as fake:
        httpx.post(fake.base_url_openai + "/chat/completions", json={...})
        fake.stats()
"""

from __future__ import annotations

import ipaddress
import random
import threading
import time
from types import TracebackType
from typing import Any, Self

from cross_instance.testing.fakeprovider.headers import HEADER_STYLES, HeaderStyle
from cross_instance.testing.fakeprovider.limits import KEEP, Keep, LimitConfig, Limits
from cross_instance.testing.fakeprovider.stats import MAX_EVENTS, StatsRecorder

Latency = float | tuple[float, float]


class FakeProvider:
    """A loopback HTTP fake LLM provider running on a background thread.

    Promises: binds only a loopback address; every admission decision is exact under
    concurrency (see :mod:`cross_instance.testing.fakeprovider.limits`); rate-limit headers of
    ``header_style`` are on every 200 and 429; ``stats()`` counts every completion request.
    """

    def __init__(
        self,
        requests_per_minute: int = 600,
        burst: int = 10,
        tokens_per_minute: int | None = None,
        token_burst: int | None = None,
        latency_s: Latency = 0.0,
        header_style: HeaderStyle = "openai",
        retry_after: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        max_events: int = MAX_EVENTS,
    ) -> None:
        """Configure (nothing listens until :meth:`start`). Raises ``ValueError`` on bad values.

        ``latency_s`` is a fixed delay or a ``(lo, hi)`` range drawn uniformly from a
        ``seed``-ed generator; ``token_burst`` defaults to ``tokens_per_minute``.
        """
        if header_style not in HEADER_STYLES:
            raise ValueError(f"header_style must be one of {HEADER_STYLES}, got {header_style!r}")
        if not _is_loopback(host):
            raise ValueError(f"host must be a loopback address, got {host!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        self._latency = _check_latency(latency_s)
        self.limits = Limits(requests_per_minute, burst, tokens_per_minute, token_burst)
        self.header_style: HeaderStyle = header_style
        self.retry_after = retry_after
        self._max_events = max_events
        self.recorder = StatsRecorder(time.monotonic_ns(), max_events)
        self._host, self._port = host, port
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve on a daemon thread; afterwards :attr:`url` has the real port."""
        from cross_instance.testing.fakeprovider.handler import ProviderHTTPServer

        if self._server is not None:
            raise RuntimeError("FakeProvider already started")
        self.recorder = StatsRecorder(time.monotonic_ns(), self._max_events)
        self._server = ProviderHTTPServer((self._host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"fake-provider-{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket and open connections. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        """Start (if not yet started) and return self."""
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the requested one before :meth:`start`)."""
        if self._server is None:
            return self._port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (no trailing slash)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def base_url_openai(self) -> str:
        """Base URL for the ``openai`` SDK: ``url + "/v1"``."""
        return self.url + "/v1"

    @property
    def base_url_anthropic(self) -> str:
        """Base URL for the ``anthropic`` SDK: :attr:`url`."""
        return self.url

    # -- control ---------------------------------------------------------------------------

    def set_limit(
        self,
        requests_per_minute: int | None = None,
        burst: int | None = None,
        tokens_per_minute: int | Keep | None = KEEP,
        token_burst: int | Keep | None = KEEP,
    ) -> LimitConfig:
        """Change limits at run time (thread-safe); omitted ones stay, ``tokens_per_minute=None``
        turns token limiting off. Spent capacity stays spent. Returns the limits now in force."""
        return self.limits.set(requests_per_minute, burst, tokens_per_minute, token_burst)

    def refill(self) -> None:
        """Full buckets again, same limits (a fresh provider minute for a new experiment)."""
        cfg = self.limits.config()
        self.limits = Limits(cfg.requests_per_minute, cfg.burst, cfg.tokens_per_minute,
                             cfg.token_burst)

    def set_latency(self, latency_s: Latency) -> None:
        """Change the latency of requests admitted from now on."""
        self._latency = _check_latency(latency_s)

    def stats(self, events: bool = False) -> dict[str, Any]:
        """Snapshot: ``requests``, ``ok``, ``rate_limited``, ``bad_request`` (answers on the
        rate-limited routes), ``by_client`` (``{id: {ok, rate_limited, bad_request}}``),
        ``by_route`` (``{route: answers}`` on every known ``/v1`` route, ``/v1/models/{id}`` as
        one), ``apiKeys`` (distinct keys from ``Authorization: Bearer`` or ``x-api-key``, first
        seen first, at most 100), ``events_recorded``, ``limits``, and with ``events=True`` the
        event log ``[[t_ns since start, client_id, status], ...]`` (newest 1,000,000 kept)."""
        out = self.recorder.snapshot(events)
        cfg = self.limits.config()
        out["limits"] = {"requests_per_minute": cfg.requests_per_minute, "burst": cfg.burst,
                         "tokens_per_minute": cfg.tokens_per_minute,
                         "token_burst": cfg.token_burst}
        return out

    def reset_stats(self) -> None:
        """Clear counts, events and API keys (event times stay relative to server start)."""
        self.recorder.reset()

    def draw_latency(self) -> float:
        """Seconds to delay the next admitted answer (seeded uniform draw for a range)."""
        latency = self._latency
        if isinstance(latency, tuple):
            with self._rng_lock:
                return self._rng.uniform(*latency)
        return latency


def _check_latency(latency: Latency) -> Latency:
    if isinstance(latency, tuple):
        if len(latency) != 2:
            raise ValueError(f"latency range must be (lo, hi), got {latency!r}")
        lo, hi = float(latency[0]), float(latency[1])
        if not 0 <= lo <= hi:
            raise ValueError(f"latency range needs 0 <= lo <= hi, got {latency!r}")
        return (lo, hi)
    value = float(latency)
    if value < 0:
        raise ValueError(f"latency must be >= 0, got {latency!r}")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
