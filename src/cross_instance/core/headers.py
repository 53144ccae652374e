"""What a provider's response says about its limits, parsed without I/O (the clock is given).

Understood: OpenAI ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (reset as a Go
duration such as ``6m0s`` or ``120ms``), Anthropic ``anthropic-ratelimit-{requests,tokens,
input-tokens,output-tokens}-{limit,remaining,reset}`` (reset as an RFC 3339 time),
``retry-after`` (seconds or an HTTP date), ``retry-after-ms``, and Gemini's
``RetryInfo.retryDelay`` in the JSON body of a 429. A 429 is a rate limit; Anthropic's 529
(and a 503) means the provider is overloaded, which is not a rate limit. Promise: unknown or
malformed values are ignored, never fatal: every function here returns, whatever the input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# Sanity bound of the parser only (finite, and small enough for integer nanoseconds); what a
# hint may actually impose is bounded by adaptiveRateControl.maxCooldownMs (core.adaptive).
MAX_WAIT_S = 1e10


@dataclass(frozen=True, slots=True)
class Reported:
    """One bucket as the provider reported it; any field may be unknown (None).
    ``reset_s``: seconds from now until the bucket is full again (or the window resets)."""

    limit: int | None = None
    remaining: int | None = None
    reset_s: float | None = None

    @property
    def known(self) -> bool:
        return self.limit is not None or self.remaining is not None or self.reset_s is not None


@dataclass(frozen=True, slots=True)
class Signals:
    """Everything a response says about limits."""

    status: int
    rate_limited: bool = False
    overloaded: bool = False
    retry_after_s: float | None = None
    requests: Reported = Reported()
    tokens: Reported = Reported()
    input_tokens: Reported = Reported()
    output_tokens: Reported = Reported()


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``1s``, ``6m0s``, ``1h2m3.5s``, ``120ms``), or None."""
    text = text.strip()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text or not math.isfinite(total):
        return None
    return total


def _seconds(value: float | None) -> float | None:
    """A wait in seconds, clamped to [0, MAX_WAIT_S]; None for no or non-finite value."""
    if value is None or not math.isfinite(value):
        return None
    return min(max(value, 0.0), MAX_WAIT_S)


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _float(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _until(text: str | None, now_wall_s: float) -> float | None:
    """Seconds from now until an RFC 3339 time."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return _seconds(when.timestamp() - now_wall_s)


def retry_after(headers: Mapping[str, str], now_wall_s: float) -> float | None:
    """``retry-after-ms`` if present and valid, else ``retry-after`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None and (value := _float(ms)) is not None:
        return _seconds(value / 1000)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    if (value := _float(raw)) is not None:
        return _seconds(value)
    import email.utils  # an HTTP-date Retry-After is rare: not paid at every start

    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return _seconds(when.timestamp() - now_wall_s)


def _openai(headers: Mapping[str, str], kind: str) -> Reported:
    reset = headers.get(f"x-ratelimit-reset-{kind}")
    return Reported(_int(headers.get(f"x-ratelimit-limit-{kind}")),
                    _int(headers.get(f"x-ratelimit-remaining-{kind}")),
                    None if reset is None else _seconds(parse_duration(reset)))


def _anthropic(headers: Mapping[str, str], kind: str, now_wall_s: float) -> Reported:
    prefix = f"anthropic-ratelimit-{kind}-"
    return Reported(_int(headers.get(prefix + "limit")), _int(headers.get(prefix + "remaining")),
                    _until(headers.get(prefix + "reset"), now_wall_s))


def _gemini_retry_delay(body: bytes | str | None) -> float | None:
    """``error.details[@type=...RetryInfo].retryDelay`` of a Gemini error body."""
    if not body:
        return None
    try:
        data = json.loads(body)
        details = data["error"]["details"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(details, list):
        return None
    for item in details:
        if (isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo")
                and isinstance(item.get("retryDelay"), str)):
            return _seconds(parse_duration(item["retryDelay"]))
    return None


def _lower(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> dict[str, str]:
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    try:
        for key, value in items:
            if isinstance(key, str) and isinstance(value, str):
                out[key.lower()] = value
    except (TypeError, ValueError):
        return out
    return out


def parse_response(status: int, headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
                   body: bytes | str | None, now_wall_s: float) -> Signals:
    """The limits a response reports (its status, headers and, for a 429, its body)."""
    h = _lower(headers)
    wait = retry_after(h, now_wall_s)
    if wait is None and status == 429:
        wait = _gemini_retry_delay(body)
    anthropic = any(k.startswith("anthropic-ratelimit-") for k in h)
    if anthropic:
        requests = _anthropic(h, "requests", now_wall_s)
        tokens = _anthropic(h, "tokens", now_wall_s)
        input_tokens = _anthropic(h, "input-tokens", now_wall_s)
        output_tokens = _anthropic(h, "output-tokens", now_wall_s)
    else:
        requests, tokens = _openai(h, "requests"), _openai(h, "tokens")
        input_tokens = output_tokens = Reported()
    return Signals(status=status, rate_limited=status == 429, overloaded=status in (503, 529),
                   retry_after_s=wait, requests=requests, tokens=tokens,
                   input_tokens=input_tokens, output_tokens=output_tokens)
