"""From a provider's answer to the shared learned state: ``Permit.report(...)``.

The answer (status, headers, body, or an SDK exception carrying them) is parsed by
``core.headers``; a 429, a cooldown or a stated limit goes to the store at once (every instance
learns from it); plain successes only matter for recovery, which cannot happen more often than
``core.adaptive.RECOVER_EVERY_NS``, so each process sends at most one per bucket per that
interval. Adjustments are written to ``.pi/logs/adaptive-rate-controller.log``.

What changed is also announced to the shared event log (``runtime.announcer``, off this
thread): ``rate_limited`` for every 429 reported, ``limit_learned`` when a bucket's rate moved,
``cooldown_started`` when this process moved the end of a bucket's cooldown later, and
``cooldown_ended`` once that end has passed. The end is checked when it is due, against the
store (one read per cooldown): if another instance has moved it later since, that instance
announces the end instead, so each cooldown ends once in the log. If the instance that set the
last end closes before it, no ``cooldown_ended`` is written (the cooldown still ends).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cross_instance.core import adaptive
from cross_instance.core import events as ev
from cross_instance.core.headers import Signals, parse_response
from cross_instance.core.keys import is_requests, is_tokens, parse_key
from cross_instance.core.limits import DEFAULT_MAX_COOLDOWN_MS, AdaptiveSettings
from cross_instance.core.records import Adjustment, Outcome, PermitRequest
from cross_instance.runtime.logs import LineLog

if TYPE_CHECKING:
    from cross_instance.core.pricing import TokenUsage
    from cross_instance.runtime.announcer import Announcer
    from cross_instance.runtime.permit import Permit
    from cross_instance.runtime.session import Session
    from cross_instance.runtime.spending import Spending
    from cross_instance.stores.base import Store

Headers = Mapping[str, str] | Iterable[tuple[str, str]] | None


def from_error(error: BaseException) -> tuple[int, Headers, bytes | str | None]:
    """Status, headers and body of an SDK or httpx exception (openai/anthropic errors carry
    ``status_code`` and ``response``); status 0 when it carries none (a network error)."""
    response = getattr(error, "response", None)
    status = getattr(error, "status_code", None) or getattr(response, "status_code", 0) or 0
    headers = getattr(response, "headers", None)
    body: bytes | str | None = None
    try:
        body = getattr(response, "text", None)
    except Exception:  # noqa: BLE001 - a streamed body that was never read
        body = None
    return int(status), headers, body if isinstance(body, str | bytes) else None


def request_keys(req: PermitRequest) -> list[str]:
    return [key for key, _ in req.rates if is_requests(key)]


def token_keys(req: PermitRequest) -> list[str]:
    return [key for key, _ in req.rates if is_tokens(key)]


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1e9)


MAX_STATED = 10**12  # a stated limit or remaining count beyond any provider's: kept at this


def _count(value: int | None) -> int | None:
    return None if value is None else max(0, min(int(value), MAX_STATED))


def outcome_for(req: PermitRequest, granted_ns: int, signals: Signals,
                max_cooldown_ns: int = DEFAULT_MAX_COOLDOWN_MS * 1_000_000) -> Outcome:
    """What the store is told; every wait hint already within ``[0, max_cooldown_ns]``."""
    reported = []
    tokens = signals.tokens if signals.tokens.known else signals.input_tokens
    for keys, r in ((request_keys(req), signals.requests), (token_keys(req), tokens)):
        if r.known and keys:
            reset_ns = adaptive.clamp_hint(_ns(r.reset_s), max_cooldown_ns)
            reported.append((keys[-1], _count(r.limit), _count(r.remaining),
                             reset_ns))  # most specific
    retry = adaptive.clamp_hint(_ns(signals.retry_after_s), max_cooldown_ns)
    return Outcome(granted_ns, signals.rate_limited, retry, tuple(reported))


def clamped_hints(signals: Signals, max_cooldown_ns: int) -> list[tuple[str, float]]:
    """The hints of ``signals`` that would have set a cooldown beyond the maximum, by name
    (``retry-after`` on a 429, a reset while nothing remains), with the seconds they said."""
    limit_s = max_cooldown_ns / 1e9
    out = []
    if signals.rate_limited and (signals.retry_after_s or 0.0) > limit_s:
        out.append(("retry-after", float(signals.retry_after_s or 0.0)))
    for name, r in (("requests", signals.requests), ("tokens", signals.tokens),
                    ("input-tokens", signals.input_tokens)):
        if r.remaining == 0 and (r.reset_s or 0.0) > limit_s:
            out.append((f"{name} reset", float(r.reset_s or 0.0)))
    return out


def _target(req: PermitRequest) -> str:
    return req.provider if req.model is None else f"{req.provider}/{req.model}"


class Feedback:
    """Per runtime: decides what to send, sends it, logs what changed. It is the ``Reporter``
    of the store's permits: ``permit.report(...)`` arrives here."""

    def __init__(self, store: Store, session: Session, policy: AdaptiveSettings,
                 log: LineLog, announcer: Announcer | None = None,
                 spending: Spending | None = None) -> None:
        self.store = store
        self.spending = spending
        self._session = session
        self.policy = policy
        self.log = log
        self.announcer = announcer
        self._last_success: dict[str, float] = {}
        self._last_reported: dict[str, tuple[Any, ...]] = {}
        self._cooldowns: dict[str, int] = {}  # bucket -> the latest end this process set
        self._lock = threading.Lock()

    def report(self, permit: Permit, status: int | None, headers: Any,
               body: bytes | str | None, error: BaseException | None,
               usage_tokens: int | None, detail: TokenUsage | None = None) -> None:
        """What a call met, from ``permit.report``: the token estimate reconciled with the
        real usage, its cost settled against the spend budgets (``detail``: the usage by
        kind, when the caller read it), and the provider's answer learned from (arguments
        checked by the permit)."""
        req = permit.request
        if not isinstance(req, PermitRequest) or self._session.closed:
            return
        if self.spending is not None and (permit.spend is not None
                                          or self.spending.applies(req.provider)):
            self._settle(permit, status, body, usage_tokens, detail)
        if usage_tokens is not None:
            changes = [(k, usage_tokens - cost) for k, cost in req.rates if is_tokens(k)]
            if changes:
                self.store.adjust_tokens(changes)
        if error is not None:
            status, headers, body = from_error(error)
        if not status:
            return  # no answer from the provider: nothing to learn
        self.learn(req, permit.granted_ns, status, headers, body)

    def _settle(self, permit: Permit, status: int | None, body: bytes | str | None,
                usage_tokens: int | None, detail: TokenUsage | None) -> None:
        from cross_instance.core.pricing import TokenUsage, usage_of

        assert self.spending is not None
        if detail is None and body is not None and (status is None or status < 400):
            detail = usage_of(body.encode() if isinstance(body, str) else body,
                              "text/event-stream" if _looks_like_events(body) else "")
        if detail is None and usage_tokens is not None:
            detail = TokenUsage(0, usage_tokens)  # a total only: priced as output, the dearest
        spend, permit.spend = permit.spend, None  # settled once
        self.spending.settle(spend, status, detail, permit.provider, permit.model)

    def learn(self, req: PermitRequest, granted_ns: int, status: int, headers: Headers,
              body: bytes | str | None) -> list[Adjustment]:
        """Send what the answer ``status``/``headers``/``body`` teaches about ``req``'s
        buckets (when it is news) and log what changed."""
        signals = parse_response(status, headers, body, time.time())
        max_ns = self.policy.max_cooldown_ms * 1_000_000
        outcome = outcome_for(req, granted_ns, signals, max_ns)
        for hint, seconds in clamped_hints(signals, max_ns):
            self.log("Clamped the provider's %s of %.3fs to the maximum cooldown %.3fs "
                     "(adaptiveRateControl.maxCooldownMs) for %s", hint, seconds, max_ns / 1e9,
                     _target(req))
        keys = request_keys(req)
        if signals.rate_limited and keys and self.announcer is not None:
            self.announcer.emit(ev.RATE_LIMITED, ev.rate_limited(
                keys[-1], signals.retry_after_s), req.instance_id)
        if not keys or not self._worth_sending(keys, outcome, signals):
            return []
        # 429s and cooldowns concern the request buckets; stated token limits their own
        keys += [key for key, *_ in outcome.reported if key not in keys]
        changes = self.store.record_outcome(keys, outcome, self.policy)
        if changes:
            now_ns = self.store.now_ns()
            for c in changes:
                self._log(req, c, now_ns)
            self._announce(req.instance_id, outcome, changes, now_ns)
        return changes

    def _announce(self, instance_id: str, outcome: Outcome, changes: list[Adjustment],
                  now_ns: int) -> None:
        announcer = self.announcer
        if announcer is None:
            return
        stated = {key: limit for key, limit, *_ in outcome.reported}
        for c in changes:
            if c.new_rate != c.old_rate:
                announcer.emit(ev.LIMIT_LEARNED, ev.limit_learned(c, stated.get(c.key)),
                               instance_id)
            left_ns = c.cooldown_until_ns - now_ns
            if left_ns <= 0:
                continue
            with self._lock:
                if c.cooldown_until_ns <= self._cooldowns.get(c.key, 0):
                    continue  # this process announced this end (or a later one) already
                self._cooldowns[c.key] = c.cooldown_until_ns
            until_wall_ms = time.time_ns() // 1_000_000 + left_ns // 1_000_000
            announcer.emit(ev.COOLDOWN_STARTED,
                           ev.cooldown_started(c, left_ns / 1e9, until_wall_ms), instance_id)
            announcer.after(left_ns / 1e9, functools.partial(self._cooldown_due, c.key))

    def _cooldown_due(self, key: str) -> None:
        """On the announcer's thread, when the end this process set for ``key`` is due:
        announce the end once it has passed in the store, unless another instance has moved
        it later since (that one announces it)."""
        with self._lock:
            mine = self._cooldowns.get(key)
        if mine is None or self.announcer is None:
            return
        snap = self.store.snapshot()
        until = next((b.cooldown_until_ns for b in snap.buckets if b.key == key), 0)
        if snap.now_ns < until <= mine:  # not over on the store's clock yet: look again then
            self.announcer.after((until - snap.now_ns) / 1e9,
                                 functools.partial(self._cooldown_due, key))
            return
        with self._lock:
            if self._cooldowns.get(key) != mine:
                return  # moved later by this process meanwhile: that end has its own check
            del self._cooldowns[key]
        if until <= mine:
            self.announcer.emit(ev.COOLDOWN_ENDED,
                                ev.cooldown_ended(key, "expired" if until == mine else "reset"))

    def _worth_sending(self, keys: list[str], outcome: Outcome, signals: Signals) -> bool:
        if outcome.rate_limited or outcome.retry_after_ns is not None:
            return True
        if not (200 <= signals.status < 300):
            return False  # other errors say nothing about the rate
        now = time.monotonic()
        with self._lock:
            fresh = False
            for key, limit, remaining, _ in outcome.reported:
                stated = (limit, remaining == 0)
                if self._last_reported.get(key) != stated:
                    self._last_reported[key] = stated
                    fresh = True
            if fresh:
                return True
            if now - self._last_success.get(keys[0], 0.0) < adaptive.RECOVER_EVERY_NS / 1e9:
                return False
            self._last_success[keys[0]] = now
            return True

    def _log(self, req: PermitRequest, c: Adjustment, now_ns: int) -> None:
        target = parse_key(c.key).target
        if c.reason == "429 error detected":
            self.log("429 error detected, adjusting rate limit (%s)", target)
        elif c.reason.startswith("429"):
            self.log("429 error detected for %s in the same congestion epoch: rate stays at %d",
                     target, c.new_rate)
        if int(c.new_rate) < int(c.old_rate):
            self.log("Reduced requests per minute from %d to %d (%s, %s)", c.old_rate,
                     c.new_rate, target, c.reason)
        elif int(c.new_rate) > int(c.old_rate):
            self.log("Increased requests per minute from %d to %d (%s, %s)", c.old_rate,
                     c.new_rate, target, c.reason)
        left = c.cooldown_until_ns - now_ns
        if left > 0:
            self.log("Cooldown: every instance waits %.3fs before calling %s (reported to %s)",
                     left / 1e9, target, req.instance_id)


def _looks_like_events(body: bytes | str) -> bool:
    head = body[:64]
    return (head.lstrip().startswith(b"data:") or head.lstrip().startswith(b"event:")
            if isinstance(head, bytes) else
            head.lstrip().startswith(("data:", "event:")))
