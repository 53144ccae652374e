"""The fake provider's own enforcement: a request bucket and an optional token bucket (GCRA).

A request is admitted iff the request bucket admits cost 1 *and* (when tokens are limited) the
token bucket admits the request's token cost; only then are both charged. Decisions are atomic
under a lock, so concurrent handlers never over-admit: in any window W the admitted requests are
at most ``burst + rpm*W/60s`` (and likewise for tokens), per :mod:`cross_instance.core.limiter`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from cross_instance.core import limiter
from cross_instance.core.limiter import RateSpec
from cross_instance.testing.fakeprovider.headers import BucketView


class Keep(Enum):
    """Sentinel for :meth:`Limits.set`: leave this setting as it is."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one request, with bucket snapshots taken right after the decision.

    ``wait_ns`` is the time until the same request would be admitted: 0 when admitted, ``None``
    when it never can be (its token cost exceeds the token burst). ``now_ns`` is the clock
    reading the decision was made at.
    """

    admitted: bool
    now_ns: int
    wait_ns: int | None
    cost: int
    requests: BucketView
    tokens: BucketView | None


@dataclass(frozen=True, slots=True)
class LimitConfig:
    """The current limits (``token_burst`` is the effective one, ``None`` when tokens are off)."""

    requests_per_minute: int
    burst: int
    tokens_per_minute: int | None
    token_burst: int | None


class Limits:
    """Thread-safe request and token buckets, changeable at run time."""

    def __init__(
        self,
        requests_per_minute: int,
        burst: int,
        tokens_per_minute: int | None = None,
        token_burst: int | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """Validate and build the buckets (both start full). ``token_burst`` defaults to tpm."""
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._req_spec = RateSpec(requests_per_minute, burst)
        self._req_tat = now
        self._tok_burst_explicit = token_burst
        self._tok_spec = _token_spec(tokens_per_minute, token_burst)
        self._tok_tat = now

    def config(self) -> LimitConfig:
        """The limits now in force."""
        with self._lock:
            tok = self._tok_spec
            return LimitConfig(
                self._req_spec.per_minute,
                self._req_spec.burst,
                tok.per_minute if tok else None,
                tok.burst if tok else None,
            )

    def set(
        self,
        requests_per_minute: int | None = None,
        burst: int | None = None,
        tokens_per_minute: int | Keep | None = KEEP,
        token_burst: int | Keep | None = KEEP,
    ) -> LimitConfig:
        """Change limits now; omitted settings stay. ``tokens_per_minute=None`` turns tokens off.

        Tokens already spent stay spent under the new rate (the bucket's debt, in tokens, is
        kept), so lowering a limit takes effect at once. Raises ``ValueError`` on bad values.
        """
        with self._lock:
            now = self._clock()
            old_req = self._req_spec
            new_req = RateSpec(
                old_req.per_minute if requests_per_minute is None else requests_per_minute,
                old_req.burst if burst is None else burst,
            )
            explicit = self._tok_burst_explicit if token_burst is KEEP else token_burst
            old_tok = self._tok_spec
            if tokens_per_minute is KEEP:
                tpm = old_tok.per_minute if old_tok else None
            else:
                tpm = tokens_per_minute
            new_tok = _token_spec(tpm, explicit)
            self._req_tat = _rescale(self._req_tat, now, old_req, new_req)
            if new_tok is not None:
                self._tok_tat = _rescale(self._tok_tat, now, old_tok, new_tok) if old_tok else now
            self._req_spec, self._tok_spec, self._tok_burst_explicit = new_req, new_tok, explicit
        return self.config()

    def decide(self, token_cost: int) -> Decision:
        """Admit or reject one request costing ``token_cost`` tokens, charging only if admitted."""
        if token_cost < 0:
            raise ValueError(f"token cost must be >= 0, got {token_cost}")
        with self._lock:
            now = self._clock()
            req, tok = self._req_spec, self._tok_spec
            ok = limiter.admits(self._req_tat, now, req, 1)
            if tok is not None:
                ok = limiter.admits(self._tok_tat, now, tok, token_cost) and ok
            if ok:
                self._req_tat = limiter.consume(self._req_tat, now, req, 1)
                if tok is not None:
                    self._tok_tat = limiter.consume(self._tok_tat, now, tok, token_cost)
                wait: int | None = 0
            elif tok is not None and token_cost > tok.burst:
                wait = None
            else:
                wait = limiter.ready_at(self._req_tat, now, req, 1) - now
                if tok is not None:
                    tok_ready = limiter.ready_at(self._tok_tat, now, tok, token_cost)
                    wait = max(wait, tok_ready - now)
            return Decision(
                admitted=ok,
                now_ns=now,
                wait_ns=wait,
                cost=token_cost,
                requests=_view(self._req_tat, now, req),
                tokens=_view(self._tok_tat, now, tok) if tok is not None else None,
            )


def _token_spec(tokens_per_minute: int | None, token_burst: int | None) -> RateSpec | None:
    if tokens_per_minute is None:
        if token_burst is not None:
            raise ValueError("token_burst needs tokens_per_minute")
        return None
    return RateSpec(tokens_per_minute, tokens_per_minute if token_burst is None else token_burst)


def _rescale(tat: int, now: int, old: RateSpec, new: RateSpec) -> int:
    """Keep the bucket's debt in tokens (not in time) across a change of emission interval."""
    debt_ns = max(0, tat - now)
    return now + -(-debt_ns * new.interval_ns // old.interval_ns)


def _view(tat: int, now: int, spec: RateSpec) -> BucketView:
    return BucketView(
        limit=spec.per_minute,
        remaining=limiter.available(tat, now, spec),
        reset_ns=max(0, tat - now),
    )
