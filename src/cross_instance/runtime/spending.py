"""Spend budgets kept in the store, for every path that spends: library permits, the API's
permits and the provider gateway, in every process of the store.

How (``core.budgets`` has the arithmetic): a call's estimated cost is reserved against every
budget that applies (the account's, its provider's; today's and this month's) in the same
store step that reads what they have spent; a call that does not fit hands its reservation
back and waits for the period that frees it, or is refused (``budgets.onExceed``). When the
call is done its real cost, priced from the provider's own usage, replaces the estimate.

Promises:

- a budget's spend stays within the budget plus what the calls in flight when it was reached
  cost beyond their estimates (an estimate with the request's output allowance is an upper
  bound, so usually nothing);
- a call refused or failed by the provider (status >= 400) costs nothing; a call whose usage
  is not known keeps its estimate; a library call that reports only a token total is priced
  as if every token were output (the dearest kind): pass the response ``body=`` for the
  exact split;
- a model without a price (``prices`` in the config, over the package's dated table) costs
  nothing and is logged once per process: add its price to count it;
- ``budget_warning`` is announced once per budget and period per process when a call takes a
  budget to ``warnShare`` of its limit; ``budget_exceeded`` each time a call is held back.

Nothing here runs without a budget: with none configured, a permit makes no extra store call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cross_instance.config import Config
from cross_instance.core import events as ev
from cross_instance.core.budgets import (
    NANO_PER_USD,
    Budgets,
    BudgetUse,
    SpendKey,
    charge,
    check,
    net_spent,
    period_keys,
    read_keys,
    store_expiry_ns,
)
from cross_instance.core.pricing import (
    Price,
    TokenUsage,
    cost_nano_usd,
    estimate_cost_nano_usd,
    price_for,
)
from cross_instance.errors import BudgetExceeded
from cross_instance.stores.base import Store


@dataclass(frozen=True, slots=True)
class Reservation:
    """A call's estimated cost, reserved against its budgets' keys until it is settled."""

    provider: str
    model: str | None
    keys: tuple[SpendKey, ...]
    expires: tuple[int, ...]
    price: Price | None
    estimate_nano: int


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One budget as ``pi-xi limits`` shows it."""

    scope: str  # "account" or "provider"
    provider: str | None
    period: str  # "day" or "month"
    period_id: str  # 2026-12-07 or 2026-12
    limit_usd: float
    spent_usd: float

    @property
    def left_usd(self) -> float:
        return max(self.limit_usd - self.spent_usd, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "provider": self.provider, "period": self.period,
                "periodId": self.period_id, "limitUsd": self.limit_usd,
                "spentUsd": round(self.spent_usd, 6), "leftUsd": round(self.left_usd, 6),
                "share": round(self.spent_usd / self.limit_usd, 4) if self.limit_usd else None}


Emit = Callable[[str, dict[str, Any], "str | None"], None]


class Spending:
    """One process's view of the budgets (thread-safe: every step is one store call)."""

    def __init__(self, store: Store, budgets: Budgets,
                 prices: Mapping[str, Mapping[str, Price]], emit: Emit | None = None,
                 log: Callable[..., None] | None = None) -> None:
        self.store = store
        self.budgets = budgets
        self.prices = prices
        self.emit = emit
        self.log = log or (lambda *a: None)
        self._warned: set[str] = set()
        self._unpriced: set[tuple[str, str | None]] = set()
        #: the last reading of each budget, by spend key (for metrics)
        self.latest: dict[str, BudgetUse] = {}

    def applies(self, provider: str) -> bool:
        return any(b.per_day_usd is not None or b.per_month_usd is not None
                   for _, b in self.budgets.applicable(provider))

    def _price(self, provider: str, model: str | None) -> Price | None:
        price = None if model is None else price_for(self.prices, provider, model)
        if price is None and (provider, model) not in self._unpriced:
            self._unpriced.add((provider, model))
            self.log("Budgets: no price for %s/%s, so its calls cost nothing against the "
                     "budgets: add it under crossInstance.prices", provider, model)
        return price

    def reserve(self, provider: str, model: str | None, input_tokens: int,
                output_tokens: int, instance_id: str | None = None) -> Reservation | None:
        """Reserve a call's estimated cost; None when no budget applies. ``BudgetExceeded``
        when it does not fit (``retry_after``: when the period that frees it begins, None
        when waiting cannot help or ``onExceed`` is ``refuse``)."""
        if not self.applies(provider):
            return None
        price = self._price(provider, model)
        estimate = (0 if price is None else
                    estimate_cost_nano_usd(price, max(input_tokens, 0), max(output_tokens, 0)))
        now_ns = time.time_ns()
        keys, expires = self._periods(provider, now_ns)
        totals = self.store.add_spend(charge(keys, estimate, 0, expires))
        spent = {k: max(v - estimate, 0) for k, v in net_spent(keys, totals).items()}
        verdict = check(self.budgets, provider, spent, estimate, now_ns / 1e9)
        for use in (*verdict.warnings, *verdict.over):
            self.latest[use.key] = use
        self._warn(verdict.warnings, instance_id)
        if verdict.ok:
            return Reservation(provider, model, keys, expires, price, estimate)
        self.store.add_spend(charge(keys, 0, estimate, expires))  # hand it back
        retry = (None if verdict.action != "wait" or verdict.resume_at_unix_s is None
                 else verdict.resume_at_unix_s - now_ns / 1e9)
        if self.emit is not None and verdict.blocked is not None:
            self.emit(ev.BUDGET_EXCEEDED, {
                **_use_json(verdict.blocked), "model": model,
                "estimateUsd": estimate / NANO_PER_USD, "action": verdict.action,
                "retryAfter": retry}, instance_id)
        raise BudgetExceeded(provider, model, retry, verdict.reason)

    def _periods(self, provider: str, now_ns: int
                 ) -> tuple[tuple[SpendKey, ...], tuple[int, ...]]:
        """The keys a call to ``provider`` at ``now_ns`` counts against, and when the store
        may forget each (on its own clock)."""
        keys = tuple(period_keys(provider, now_ns / 1e9))
        store_now = self.store.now_ns()
        return keys, tuple(store_expiry_ns(k, now_ns, store_now) for k in keys)

    def refund(self, r: Reservation | None) -> None:
        """Hand a reservation back whole (the call never went out)."""
        if r is not None and r.estimate_nano:
            self.store.add_spend(charge(r.keys, 0, r.estimate_nano, r.expires))

    def settle(self, r: Reservation | None, status: int | None, usage: TokenUsage | None,
               provider: str | None = None, model: str | None = None) -> None:
        """Replace a reservation's estimate with the call's real cost. Without a
        reservation (a permit of the API that reports usage), the cost is charged as it is
        (to ``provider``/``model``)."""
        if r is None:
            if provider is None or usage is None or not self.applies(provider) \
                    or (status is not None and status >= 400):
                return
            price = self._price(provider, model)
            if price is None:
                return
            keys, expires = self._periods(provider, time.time_ns())
            self.store.add_spend(charge(keys, cost_nano_usd(price, usage), 0, expires))
            return
        if status is not None and status >= 400:
            cost = 0  # refused or failed: the provider bills nothing
        elif usage is not None and r.price is not None:
            cost = cost_nano_usd(r.price, usage)
        else:
            cost = r.estimate_nano
        if cost != r.estimate_nano:
            self.store.add_spend(charge(r.keys, max(cost - r.estimate_nano, 0),
                                        max(r.estimate_nano - cost, 0), r.expires))

    def _warn(self, uses: tuple[BudgetUse, ...], instance_id: str | None) -> None:
        for use in uses:
            if use.key in self._warned:
                continue
            self._warned.add(use.key)
            self.log("Budget warning: %s", _use_line(use))
            if self.emit is not None:
                self.emit(ev.BUDGET_WARNING, {**_use_json(use),
                                              "threshold": self.budgets.warn_share},
                          instance_id)

    def lines(self, providers: list[str] | None = None) -> list[BudgetLine]:
        """Every budget with what its scope spent in the current period (one store read)."""
        now_s = time.time()
        wanted: list[tuple[str | None, SpendKey, float]] = []
        names = sorted(self.budgets.providers) if providers is None else providers
        scopes: list[str | None] = [None, *names]
        for name in scopes:
            budget = self.budgets.account if name is None else self.budgets.providers.get(name)
            if budget is None:
                continue
            for k in period_keys(name or "-", now_s):
                if (k.scope == "account") != (name is None):
                    continue
                usd = budget.limit_usd(k.period)
                if usd is not None:
                    wanted.append((name, k, usd))
        if not wanted:
            return []
        keys = [k for _, k, _ in wanted]
        spent = net_spent(keys, self.store.read_spend(read_keys(keys)))
        return [BudgetLine(k.scope, name, k.period, k.period_id, usd,
                           spent[k.key] / NANO_PER_USD)
                for name, k, usd in wanted]


def spending_for(store: Store, config: Config, emit: Emit | None,
                 log: Callable[..., None] | None) -> Spending | None:
    """The keeper of ``config``'s budgets, or None when there is none (then a permit makes
    no store call for budgets)."""
    b = config.budgets
    if b is None or (b.account is None and not b.providers):
        return None
    return Spending(store, b, config.price_table(), emit, log)


def _use_json(use: BudgetUse) -> dict[str, Any]:
    return {"scope": use.scope, "provider": use.provider, "period": use.period,
            "spentUsd": use.spent_nano / NANO_PER_USD, "limitUsd": use.limit_nano / NANO_PER_USD,
            "share": None if use.limit_nano == 0 else round(use.spent_nano / use.limit_nano, 4)}


def _use_line(use: BudgetUse) -> str:
    who = "account" if use.provider is None else f"provider {use.provider}"
    return (f"{who} {use.period}: ${use.spent_nano / NANO_PER_USD:.4f} of "
            f"${use.limit_nano / NANO_PER_USD:.4f} spent")


__all__ = ["BudgetLine", "Reservation", "Spending", "spending_for"]
