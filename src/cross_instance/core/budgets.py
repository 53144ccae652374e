"""Spend budgets: money per UTC day and month, per provider and for the whole account (pure).

Spending is kept by the store as integer nano-dollars under one key per (scope, period):
``period_keys`` names the keys a call at a given time counts against, and ``check`` decides
from their totals whether a call estimated to cost ``estimate_nano`` may start.

Key format (``SpendKey.key``; ``SpendKey.refund_key`` is the same with ``refund:`` in place
of ``spend:``)::

    spend:<period>:*             the account
    spend:<period>:p:<provider>  one provider

``<period>`` is ``YYYY-MM-DD`` (a UTC day) or ``YYYY-MM`` (a UTC month) and holds no ``:``,
so everything after the second ``:`` is the scope, whatever text a provider name holds (the
rule of ``core.keys``: the last part takes the rest). The provider is kept as given except
that ``\\`` is written ``\\\\`` and a lone surrogate (text UTF-8 cannot carry, so no store
could keep it) ``\\uXXXX``: every provider text gives its own key, and ``parse_spend_key``
gives it back.

How a caller keeps a budget with the two store operations, ``add_spend`` (adds, atomically,
and returns the totals) and ``read_spend``; amounts are never negative, so what is handed back
is counted apart, under ``refund_key``, and what a scope has spent is ``key - refund_key``:

1. ``keys = period_keys(provider, now)``; ``totals = store.add_spend(charge(keys,
   estimate, 0, expires))`` reserves the estimate and reads every total in the same step;
2. ``spent = net_spent(keys, totals)`` less this call's own estimate goes to ``check``;
3. not admitted: ``store.add_spend(charge(keys, 0, estimate, expires))`` hands it back, then
   wait until ``resume_at_unix_s`` (or ask again sooner: reservations of calls in flight are
   handed back when they cost less) or refuse;
4. once the call is done: ``charge(keys, max(cost - estimate, 0), max(estimate - cost, 0),
   expires)`` on the *same* keys (a call that runs past midnight counts in the day it began).

The bound this keeps: every admission sees every earlier reservation, so at each admission the
reserved and spent money of each budget is within its limit; a budget's total spend is then at
most **the budget plus what the calls in flight at the last admission cost beyond their
estimates** (an estimate that is an upper bound, as ``pricing.estimate_cost_nano_usd`` is
without cache writes, makes that nothing). A call that would not fit even alone (its estimate
is above the limit) is refused at once with that reason: it never waits for a period that
cannot help.

Expiry: a store may forget a key after its ``expires_at_ns``, on the *store's* clock
(``Store.now_ns``; the SQLite store's is the host's boot time): ``store_expiry_ns`` turns a
period's end into one, with a grace of ``KEEP_AFTER_NS`` so that clock skew can never make a
store forget the spending of a period that has not ended.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal

from cross_instance.errors import InvalidArgument

NANO_PER_USD = 10**9
NS_PER_S = 10**9
DAY_S = 86_400
KEEP_AFTER_NS = 2 * DAY_S * NS_PER_S  # how long after its period a key is still kept
SPEND, REFUND = "spend:", "refund:"
ACCOUNT = "*"
PROVIDER = "p:"
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

Scope = Literal["account", "provider"]
Period = Literal["day", "month"]


# --- budgets ----------------------------------------------------------------------------------
def _limit(name: str, usd: float | None) -> None:
    if usd is None:
        return
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd) \
            or usd < 0:
        raise InvalidArgument(f"{name} must be a number of USD >= 0 or None, got {usd!r}")


@dataclass(frozen=True, slots=True)
class Budget:
    """USD one scope may spend per UTC day and per UTC month (None: no such limit)."""

    per_day_usd: float | None = None
    per_month_usd: float | None = None

    def __post_init__(self) -> None:
        _limit("per_day_usd", self.per_day_usd)
        _limit("per_month_usd", self.per_month_usd)

    def limit_usd(self, period: Period) -> float | None:
        return self.per_day_usd if period == "day" else self.per_month_usd


@dataclass(frozen=True, slots=True)
class Budgets:
    """The account's budget and each provider's. ``on_exceed``: a call that does not fit
    waits for the period to end (``wait``) or is refused (``refuse``); ``warn_share``: the
    share of a budget past which a warning is due."""

    account: Budget | None = None
    providers: Mapping[str, Budget] = field(default_factory=dict)
    on_exceed: Literal["wait", "refuse"] = "refuse"
    warn_share: float = 0.8

    def __post_init__(self) -> None:
        if self.on_exceed not in ("wait", "refuse"):
            raise InvalidArgument(f"on_exceed must be 'wait' or 'refuse', got "
                                  f"{self.on_exceed!r}")
        share = self.warn_share
        if isinstance(share, bool) or not isinstance(share, int | float) \
                or not 0 < share <= 1:
            raise InvalidArgument(f"warn_share must be a number in (0, 1], got {share!r}")

    def applicable(self, provider: str) -> list[tuple[Scope, Budget]]:
        out: list[tuple[Scope, Budget]] = []
        if self.account is not None:
            out.append(("account", self.account))
        if provider in self.providers:
            out.append(("provider", self.providers[provider]))
        return out


def usd_to_nano(usd: float) -> int:
    """USD as nano-dollars, exact for the decimal it was written as (0.1 is 100_000_000),
    rounded down: a limit never grows by rounding."""
    return math.floor(Decimal(repr(float(usd))) * NANO_PER_USD)


# --- keys -------------------------------------------------------------------------------------
def _escape(text: str) -> str:
    if text.isascii() and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
        elif text[i + 1:i + 2] == "\\":
            out.append("\\")
            i += 2
        elif text[i + 1:i + 2] == "u" and len(text) >= i + 6 \
                and all(c in "0123456789abcdef" for c in text[i + 2:i + 6]) \
                and 0xD800 <= int(text[i + 2:i + 6], 16) <= 0xDFFF:
            out.append(chr(int(text[i + 2:i + 6], 16)))
            i += 6
        else:
            raise ValueError(f"not an escape of a spend key at {i}: {text!r}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class SpendKey:
    """One budget's store keys in one period: ``key`` (what was charged) and ``refund_key``
    (what was handed back). ``provider`` None: the account. ``period_id``: ``YYYY-MM-DD`` or
    ``YYYY-MM``. The period is ``[starts_at_unix_ns, ends_at_unix_ns)`` in UTC."""

    key: str
    refund_key: str
    provider: str | None
    period: Period
    period_id: str
    starts_at_unix_ns: int
    ends_at_unix_ns: int

    @property
    def scope(self) -> Scope:
        return "account" if self.provider is None else "provider"


def _day(days: int) -> date:
    """The UTC date ``days`` after 1970-01-01; ``ValueError`` outside years 1..9999."""
    try:
        return date.fromordinal(_EPOCH_ORDINAL + days)
    except (ValueError, OverflowError):
        raise ValueError(f"a time outside the years 1..9999 ({days} days after 1970)") from None


def _spend_key(provider: str | None, period: Period, first: date, days: int) -> SpendKey:
    period_id = (f"{first.year:04d}-{first.month:02d}-{first.day:02d}" if period == "day"
                 else f"{first.year:04d}-{first.month:02d}")
    scope = ACCOUNT if provider is None else PROVIDER + _escape(provider)
    start = (first.toordinal() - _EPOCH_ORDINAL) * DAY_S * NS_PER_S
    return SpendKey(f"{SPEND}{period_id}:{scope}", f"{REFUND}{period_id}:{scope}", provider,
                    period, period_id, start, start + days * DAY_S * NS_PER_S)


def _month_days(d: date) -> int:
    following = date(d.year + 1, 1, 1) if d.month == 12 else date(d.year, d.month + 1, 1)
    return (following - date(d.year, d.month, 1)).days


def _periods(provider: str | None, unix_s: float) -> list[SpendKey]:
    if isinstance(unix_s, bool) or not isinstance(unix_s, int | float) \
            or not math.isfinite(unix_s):
        raise ValueError(f"a time must be a finite number of seconds, got {unix_s!r}")
    today = _day(int(unix_s // DAY_S))
    if today.year == 9999 and today.month == 12:
        raise ValueError("a time outside the years 1..9999 (its month ends after them)")
    month = today.replace(day=1)
    return [_spend_key(provider, "day", today, 1),
            _spend_key(provider, "month", month, _month_days(today))]


def period_keys(provider: str, unix_s: float) -> list[SpendKey]:
    """The keys a call to ``provider`` at ``unix_s`` counts against, in this order: (account,
    day), (account, month), (provider, day), (provider, month). ``ValueError`` for a time
    that is not finite or outside the years 1..9999."""
    if not isinstance(provider, str):
        raise InvalidArgument(f"provider must be text, got {provider!r}")
    return [*_periods(None, unix_s), *_periods(provider, unix_s)]


def parse_spend_key(text: str) -> SpendKey:
    """The ``SpendKey`` a ``key`` or ``refund_key`` belongs to; ``ValueError`` naming it for
    any other text."""
    try:
        return _parse(text)
    except (ValueError, OverflowError):
        raise ValueError(f"not a spend key: {text!r}") from None


def _parse(text: str) -> SpendKey:
    if not isinstance(text, str):
        raise ValueError
    kind = SPEND if text.startswith(SPEND) else REFUND if text.startswith(REFUND) else None
    if kind is None:
        raise ValueError
    period_id, sep, scope = text[len(kind):].partition(":")
    if not sep:
        raise ValueError
    if scope == ACCOUNT:
        provider = None
    elif scope.startswith(PROVIDER):
        provider = _unescape(scope[len(PROVIDER):])
    else:
        raise ValueError
    parts = period_id.split("-")
    if len(parts) not in (2, 3) or not all(p.isascii() and p.isdigit() for p in parts) \
            or len(parts[0]) != 4 or any(len(p) != 2 for p in parts[1:]):
        raise ValueError
    first = date(int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else 1)
    if len(parts) == 3:
        key = _spend_key(provider, "day", first, 1)
    else:
        if first.year == 9999 and first.month == 12:
            raise ValueError
        key = _spend_key(provider, "month", first, _month_days(first))
    if text not in (key.key, key.refund_key):  # not written as this module writes it
        raise ValueError
    return key


def is_spend_key(text: object) -> bool:
    """A ``key`` or ``refund_key`` made here."""
    try:
        parse_spend_key(text)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def store_expiry_ns(key: SpendKey, now_unix_ns: int, store_now_ns: int) -> int:
    """When a store may forget ``key``, on the store's clock: its period's end plus
    ``KEEP_AFTER_NS``, moved from the wall clock (``now_unix_ns``) to the store's
    (``store_now_ns``, read at about the same time)."""
    return store_now_ns + (key.ends_at_unix_ns - now_unix_ns) + KEEP_AFTER_NS


def charge(keys: Sequence[SpendKey], spent_nano: int, refunded_nano: int,
           expires_at_ns: Sequence[int]) -> list[tuple[str, int, int]]:
    """The ``add_spend`` changes that add ``spent_nano`` to each key and ``refunded_nano`` to
    each refund key (both, always: an add of 0 still returns the total), with each key's
    expiry (``expires_at_ns[i]`` for ``keys[i]``)."""
    out: list[tuple[str, int, int]] = []
    for k, expires in zip(keys, expires_at_ns, strict=True):
        out.append((k.key, spent_nano, expires))
        out.append((k.refund_key, refunded_nano, expires))
    return out


def read_keys(keys: Sequence[SpendKey]) -> list[str]:
    """The texts ``read_spend`` needs for ``net_spent``, in ``charge``'s order."""
    return [text for k in keys for text in (k.key, k.refund_key)]


def net_spent(keys: Sequence[SpendKey], totals: Sequence[int]) -> dict[str, int]:
    """What each key's scope has spent (charged less handed back, never below 0), by
    ``SpendKey.key``, from the totals of ``charge``'s changes or ``read_keys``' reads."""
    if len(totals) != 2 * len(keys):
        raise ValueError(f"{len(totals)} totals for {len(keys)} keys (two each)")
    return {k.key: max(totals[2 * i] - totals[2 * i + 1], 0) for i, k in enumerate(keys)}


# --- the decision -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BudgetUse:
    """One budget against what its scope has spent in its period."""

    scope: Scope
    provider: str | None
    period: Period
    key: str
    limit_nano: int
    spent_nano: int
    resets_at_unix_s: float  # the period's end: the next one's start

    @property
    def share(self) -> float:
        """Spent as a share of the limit (infinite for a limit of 0 with something spent)."""
        if self.limit_nano == 0:
            return 0.0 if self.spent_nano == 0 else math.inf
        return self.spent_nano / self.limit_nano


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """``ok``: the call may start. Else ``blocked`` is the budget that decides (``over``:
    every budget it does not fit) and ``action`` says what to do: ``wait`` until
    ``resume_at_unix_s`` (the start of the period that frees the last of them), or
    ``refuse`` (``on_exceed``, or ``never_fits``: the estimate alone is above a limit, so no
    period helps; then ``resume_at_unix_s`` is None). ``warnings``: the budgets that this
    call takes to ``warn_share`` of their limit or past it. ``reason``: one line for a log
    or an error."""

    ok: bool
    action: Literal["admit", "wait", "refuse"]
    blocked: BudgetUse | None = None
    over: tuple[BudgetUse, ...] = ()
    resume_at_unix_s: float | None = None
    never_fits: bool = False
    warnings: tuple[BudgetUse, ...] = ()
    reason: str = ""


def _usd(nano: int) -> str:
    return f"${nano / NANO_PER_USD:,.4f}"


def _name(use: BudgetUse) -> str:
    who = "the account" if use.provider is None else f"provider {use.provider!r}"
    return f"the {'daily' if use.period == 'day' else 'monthly'} budget of {who}"


def check(budgets: Budgets, provider: str, spent: Mapping[str, int], estimate_nano: int,
          now_unix_s: float) -> BudgetVerdict:
    """Whether a call to ``provider`` estimated at ``estimate_nano`` may start at
    ``now_unix_s``, given what each budget's scope has spent (``spent``: by ``SpendKey.key``,
    absent = 0, without this call). It may when for every budget that applies (the
    account's, the provider's; day and month) ``spent + estimate <= limit``. A call whose
    estimate alone is above a limit never fits and is refused whatever ``on_exceed`` says."""
    if isinstance(estimate_nano, bool) or not isinstance(estimate_nano, int) \
            or estimate_nano < 0:
        raise InvalidArgument(f"estimate_nano must be an integer >= 0, got {estimate_nano!r}")
    keys = {(k.scope, k.period): k for k in period_keys(provider, now_unix_s)}
    uses: list[BudgetUse] = []
    for scope, budget in budgets.applicable(provider):
        for period in ("day", "month"):
            usd = budget.limit_usd(period)
            if usd is None:
                continue
            k = keys[(scope, period)]
            uses.append(BudgetUse(scope, k.provider, period, k.key, usd_to_nano(usd),
                                  max(int(spent.get(k.key, 0)), 0),
                                  k.ends_at_unix_ns / NS_PER_S))
    warnings = tuple(u for u in uses if u.spent_nano + estimate_nano > 0
                     and u.spent_nano + estimate_nano >= budgets.warn_share * u.limit_nano)
    over = tuple(u for u in uses if u.spent_nano + estimate_nano > u.limit_nano)
    if not over:
        return BudgetVerdict(True, "admit", warnings=warnings)
    never = [u for u in over if estimate_nano > u.limit_nano]
    if never:
        worst = min(never, key=lambda u: u.limit_nano)
        return BudgetVerdict(
            False, "refuse", worst, over, None, True, warnings,
            f"the call's estimated cost {_usd(estimate_nano)} is above {_name(worst)} "
            f"({_usd(worst.limit_nano)}): it can never fit; lower max_tokens or raise the "
            f"budget")
    last = max(over, key=lambda u: u.resets_at_unix_s)
    renews = _day(int(last.resets_at_unix_s // DAY_S)).isoformat()
    return BudgetVerdict(
        False, budgets.on_exceed, last, over, last.resets_at_unix_s, False, warnings,
        f"{_name(last)} has no room for the call ({_usd(last.spent_nano)} of "
        f"{_usd(last.limit_nano)} spent, the call may cost {_usd(estimate_nano)}); it renews "
        f"at {renews} 00:00 UTC")
