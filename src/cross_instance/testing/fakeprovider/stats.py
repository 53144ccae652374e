"""Thread-safe counters, a bounded event log of the requests a fake provider answered, and the
API keys that reached it."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

MAX_EVENTS = 1_000_000
MAX_CLIENT_ID = 200
MAX_KEYS = 100
MAX_KEY_CHARS = 500


class StatsRecorder:
    """Counts answers by status and client, and keeps the newest ``max_events`` events.

    An event is ``[t_ns, client_id, status]`` with ``t_ns`` measured from ``origin_ns`` (same
    clock as the ``now_ns`` passed to :meth:`record`). Status 200 counts as ``ok``, 429 as
    ``rate_limited``, anything else (400) as ``bad_request``; all count in ``requests``.
    ``by_route`` counts answers per route (rate-limited ones and, via :meth:`count_route`, the
    others); ``apiKeys`` lists the distinct API keys seen (:meth:`note_key`), first seen first.
    """

    def __init__(self, origin_ns: int, max_events: int = MAX_EVENTS) -> None:
        """Start empty; event times are relative to ``origin_ns``."""
        self._lock = threading.Lock()
        self._origin = origin_ns
        self._events: deque[tuple[int, str, int]] = deque(maxlen=max_events)
        self._by_client: dict[str, dict[str, int]] = {}
        self._totals = {"requests": 0, "ok": 0, "rate_limited": 0, "bad_request": 0}
        self._by_route: dict[str, int] = {}
        self._keys: dict[str, None] = {}

    def record(self, client_id: str, status: int, now_ns: int, route: str | None = None) -> None:
        """Count one answer of ``status`` to ``client_id`` (ids are cut to 200 chars), and one
        for ``route`` if given."""
        client_id = client_id[:MAX_CLIENT_ID]
        key = {200: "ok", 429: "rate_limited"}.get(status, "bad_request")
        with self._lock:
            if route is not None:
                self._by_route[route] = self._by_route.get(route, 0) + 1
            self._totals["requests"] += 1
            self._totals[key] += 1
            per = self._by_client.get(client_id)
            if per is None:
                per = self._by_client[client_id] = {"ok": 0, "rate_limited": 0, "bad_request": 0}
            per[key] += 1
            self._events.append((now_ns - self._origin, client_id, status))

    def count_route(self, route: str) -> None:
        """Count one answer on ``route`` that is not rate limited (and not in ``requests``)."""
        with self._lock:
            self._by_route[route] = self._by_route.get(route, 0) + 1

    def note_key(self, key: str) -> None:
        """Remember an API key (cut to 500 chars) unless already seen or 100 are kept."""
        key = key[:MAX_KEY_CHARS]
        if key in self._keys or len(self._keys) >= MAX_KEYS:
            return  # unlocked fast path: a stale answer only means taking the lock below
        with self._lock:
            if key not in self._keys and len(self._keys) < MAX_KEYS:
                self._keys[key] = None

    def snapshot(self, events: bool = False) -> dict[str, Any]:
        """A JSON-ready copy: totals, ``by_client`` and (if asked) ``events`` oldest first."""
        with self._lock:
            out: dict[str, Any] = dict(self._totals)
            out["by_client"] = {cid: dict(c) for cid, c in self._by_client.items()}
            out["by_route"] = dict(self._by_route)
            out["apiKeys"] = list(self._keys)
            out["events_recorded"] = len(self._events)
            if events:
                out["events"] = [[t, cid, st] for t, cid, st in self._events]
        return out

    def reset(self) -> None:
        """Forget all counts, events and keys (event times stay relative to the same origin)."""
        with self._lock:
            self._events.clear()
            self._by_client.clear()
            self._by_route.clear()
            self._keys.clear()
            for key in self._totals:
                self._totals[key] = 0
