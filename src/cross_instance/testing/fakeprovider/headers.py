"""Rate-limit response headers in the formats OpenAI and Anthropic send. Pure functions.

A bucket is described by a :class:`BucketView`: its per-minute ``limit``, the whole tokens
``remaining`` now, and ``reset_ns``, the time until it is full again. Durations are always
rounded *up* (a client that waits as told is never early).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from cross_instance.core.headers import parse_duration

HeaderStyle = Literal["openai", "anthropic", "none"]
HEADER_STYLES: tuple[HeaderStyle, ...] = ("openai", "anthropic", "none")

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class BucketView:
    """A snapshot of one bucket: ``limit`` per minute, ``remaining`` now, full in ``reset_ns``."""

    limit: int
    remaining: int
    reset_ns: int


def format_openai_duration(ns: int) -> str:
    """Go-style duration as OpenAI sends it: ``0s``, ``120ms``, ``1.5s``, ``6m0s``, ``1h2m3s``.

    Rounded up to a whole millisecond; negative durations format as ``0s``.
    """
    if ns <= 0:
        return "0s"
    ms = -(-ns // NS_PER_MS)
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, frac = divmod(rest, 1000)
    sec = f"{seconds}" if frac == 0 else f"{seconds}.{frac:03d}".rstrip("0")
    if hours:
        return f"{hours}h{minutes}m{sec}s"
    if minutes:
        return f"{minutes}m{sec}s"
    return f"{sec}s"



def parse_openai_duration(text: str) -> int:
    """Nanoseconds in a Go-style duration string (inverse of :func:`format_openai_duration`).

    Raises ``ValueError`` on anything that is not a sequence of ``<number><unit>`` parts.
    """
    seconds = parse_duration(text)
    if seconds is None:
        raise ValueError(f"not a duration: {text!r}")
    return round(seconds * NS_PER_S)


def format_rfc3339(unix_ns: int) -> str:
    """UTC RFC 3339 timestamp ``YYYY-MM-DDTHH:MM:SSZ``, rounded up to a whole second."""
    seconds = -(-unix_ns // NS_PER_S)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_after_seconds(wait_ns: int) -> int:
    """Whole seconds for ``Retry-After``: the ceiling of ``wait_ns`` (at least 1 if positive)."""
    return max(0, -(-wait_ns // NS_PER_S))


def ratelimit_headers(
    style: HeaderStyle,
    requests: BucketView,
    tokens: BucketView | None,
    wall_now_ns: int,
) -> dict[str, str]:
    """The rate-limit headers of ``style`` for a request bucket and an optional token bucket.

    ``wall_now_ns`` (Unix ns) anchors Anthropic's absolute reset timestamps. Style ``none``
    gives no headers. Anthropic's input/output token headers mirror the single token bucket.
    """
    if style == "openai":
        out = _openai_pair("requests", requests)
        if tokens is not None:
            out.update(_openai_pair("tokens", tokens))
        return out
    if style == "anthropic":
        out = _anthropic_triple("requests", requests, wall_now_ns)
        if tokens is not None:
            for kind in ("tokens", "input-tokens", "output-tokens"):
                out.update(_anthropic_triple(kind, tokens, wall_now_ns))
        return out
    return {}


def retry_headers(style: HeaderStyle, wait_ns: int | None, enabled: bool) -> dict[str, str]:
    """``Retry-After`` (ceil seconds) and, for OpenAI style, ``retry-after-ms`` (ceil ms).

    Empty when disabled or when the wait is unknown (``None``: the request can never pass).
    """
    if not enabled or wait_ns is None:
        return {}
    out = {"retry-after": str(retry_after_seconds(wait_ns))}
    if style == "openai":
        out["retry-after-ms"] = str(max(0, -(-wait_ns // NS_PER_MS)))
    return out


def _openai_pair(kind: str, view: BucketView) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(view.limit),
        f"x-ratelimit-remaining-{kind}": str(view.remaining),
        f"x-ratelimit-reset-{kind}": format_openai_duration(view.reset_ns),
    }


def _anthropic_triple(kind: str, view: BucketView, wall_now_ns: int) -> dict[str, str]:
    return {
        f"anthropic-ratelimit-{kind}-limit": str(view.limit),
        f"anthropic-ratelimit-{kind}-remaining": str(view.remaining),
        f"anthropic-ratelimit-{kind}-reset": format_rfc3339(wall_now_ns + view.reset_ns),
    }
