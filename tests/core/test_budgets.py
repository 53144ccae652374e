"""Spend budgets: keys per UTC day and month that no provider text can make meet, the
admission rule, and the bound the documented reserve / settle protocol keeps."""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cross_instance.core.budgets import (
    KEEP_AFTER_NS,
    Budget,
    Budgets,
    charge,
    check,
    is_spend_key,
    net_spent,
    parse_spend_key,
    period_keys,
    read_keys,
    store_expiry_ns,
    usd_to_nano,
)
from cross_instance.core.keys import parse_key
from cross_instance.errors import InvalidArgument

NS = 10**9
T = datetime(2027, 1, 15, 12, 30, tzinfo=UTC).timestamp()
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    ["", "*", ":", "p:", "p:x", "\\", "\\\\", "\\u", "\\ud800", "\ud800", "\udfff\\", "\n\t",
     "spend:2027-01:*"])
TIMES = st.floats(-2e9, 2.5e11, allow_nan=False)  # 1906 .. 9892


def utc(*args: int) -> float:
    return calendar.timegm((*args, 0, 0, 0)[:6])


# --- keys -------------------------------------------------------------------------------------
def test_the_four_keys_of_a_call_and_their_periods():
    acc_day, acc_month, p_day, p_month = period_keys("openai", T)
    assert [k.key for k in (acc_day, acc_month, p_day, p_month)] == [
        "spend:2027-01-15:*", "spend:2027-01:*", "spend:2027-01-15:p:openai",
        "spend:2027-01:p:openai"]
    assert p_month.refund_key == "refund:2027-01:p:openai"
    assert (acc_day.scope, acc_day.period, acc_day.provider) == ("account", "day", None)
    assert (p_month.scope, p_month.period, p_month.provider) == ("provider", "month", "openai")
    assert acc_day.starts_at_unix_ns == utc(2027, 1, 15) * NS
    assert acc_day.ends_at_unix_ns == utc(2027, 1, 16) * NS
    assert acc_month.starts_at_unix_ns == utc(2027, 1, 1) * NS
    assert acc_month.ends_at_unix_ns == utc(2027, 2, 1) * NS


@pytest.mark.parametrize(("when", "day", "month", "ends"), [
    (utc(2027, 1, 15) - 1e-6, "2027-01-14", "2027-01", utc(2027, 2, 1)),
    (utc(2027, 1, 15), "2027-01-15", "2027-01", utc(2027, 2, 1)),
    (utc(2028, 2, 29, 23), "2028-02-29", "2028-02", utc(2028, 3, 1)),  # leap year
    (utc(2027, 12, 31, 23), "2027-12-31", "2027-12", utc(2028, 1, 1)),
    (utc(1969, 12, 31, 23), "1969-12-31", "1969-12", utc(1970, 1, 1)),
])
def test_periods_are_utc_days_and_months(when, day, month, ends):
    acc_day, acc_month, *_ = period_keys("p", when)
    assert (acc_day.period_id, acc_month.period_id) == (day, month)
    assert acc_month.ends_at_unix_ns == ends * NS
    assert acc_day.starts_at_unix_ns <= when * NS < acc_day.ends_at_unix_ns


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e20, -1e12])
def test_times_outside_the_calendar_are_refused(bad):
    with pytest.raises(ValueError):
        period_keys("p", bad)


@given(ANY_TEXT, ANY_TEXT, TIMES, TIMES)
def test_keys_are_injective_and_parse_back(p1, p2, t1, t2):
    k1, k2 = period_keys(p1, t1), period_keys(p2, t2)
    for k in k1:
        assert parse_spend_key(k.key) == k == parse_spend_key(k.refund_key)
        assert is_spend_key(k.key) and is_spend_key(k.refund_key)
        k.key.encode()  # text every store can keep, whatever the provider held
        with pytest.raises(ValueError):
            parse_key(k.key)  # never a bucket or slot group key
    texts1 = {k.key for k in k1} | {k.refund_key for k in k1}
    assert len(texts1) == 8  # 4 keys, 2 texts each, all distinct
    for a in k1:
        for b in k2:
            same = (a.provider, a.period, a.period_id) == (b.provider, b.period, b.period_id)
            assert (a.key == b.key) == same
            assert (a.refund_key == b.refund_key) == same
            assert a.key != b.refund_key


@pytest.mark.parametrize("text", [
    "", "spend:", "spend:2027-01-15", "spend:2027-01-15:", "spend:2027-01-15:x",
    "spend:2027-1-15:*", "spend:2027-13:*", "spend:2027-02-30:*", "spend:٢٠٢٧-01:*",
    "refund:2027-01:p:\\q", "refund:2027-01:p:\\u0041", "refund:2027-01:p:\\", "r:openai",
    "spend:2027-01:p:\ud800", "Spend:2027-01:*", "spend:9999-12:*",
])
def test_other_text_is_not_a_spend_key(text):
    assert not is_spend_key(text)
    with pytest.raises(ValueError, match="not a spend key"):
        parse_spend_key(text)
    assert not is_spend_key(7)


def test_store_expiry_moves_the_period_end_to_the_store_clock_with_a_grace():
    day = period_keys("p", T)[0]
    now_ns = int(T * NS)
    assert store_expiry_ns(day, now_ns, 5_000) == \
        5_000 + (day.ends_at_unix_ns - now_ns) + KEEP_AFTER_NS


# --- budgets ----------------------------------------------------------------------------------
def test_budget_settings_are_checked():
    for bad in (-1, float("nan"), float("inf"), "5", True):
        with pytest.raises(InvalidArgument):
            Budget(per_day_usd=bad)  # type: ignore[arg-type]
    for share in (0, 1.5, -0.1, float("nan")):
        with pytest.raises(InvalidArgument):
            Budgets(warn_share=share)
    with pytest.raises(InvalidArgument):
        Budgets(on_exceed="later")  # type: ignore[arg-type]
    assert usd_to_nano(0.1) == 100_000_000 and usd_to_nano(12.345678901) == 12_345_678_901


def spent_at(provider: str, **values: int) -> dict[str, int]:
    """Spend by (scope_period) name: acc_day, acc_month, p_day, p_month."""
    names = ("acc_day", "acc_month", "p_day", "p_month")
    keys = dict(zip(names, period_keys(provider, T), strict=True))
    return {keys[n].key: v for n, v in values.items()}


def test_a_call_is_admitted_exactly_while_it_fits():
    budgets = Budgets(providers={"openai": Budget(per_day_usd=1.0)})
    fits = check(budgets, "openai", spent_at("openai", p_day=900_000_000), 100_000_000, T)
    assert fits.ok and fits.action == "admit" and fits.blocked is None
    over = check(budgets, "openai", spent_at("openai", p_day=900_000_001), 100_000_000, T)
    assert not over.ok and over.action == "refuse" and not over.never_fits
    assert over.blocked is not None
    assert (over.blocked.scope, over.blocked.period, over.blocked.limit_nano,
            over.blocked.spent_nano) == ("provider", "day", 1_000_000_000, 900_000_001)
    assert over.resume_at_unix_s == utc(2027, 1, 16)
    assert "daily budget of provider 'openai'" in over.reason and "2027-01-16" in over.reason
    # another provider's budget does not apply; nothing set: everything is admitted
    assert check(budgets, "anthropic", spent_at("anthropic", p_day=10**12), 10**9, T).ok
    assert check(Budgets(), "x", {}, 10**18, T).ok


def test_waiting_resumes_when_every_full_period_has_renewed():
    budgets = Budgets(account=Budget(1.0, 10.0), on_exceed="wait")
    day_only = check(budgets, "p", spent_at("p", acc_day=10**9, acc_month=10**9), 1, T)
    assert day_only.action == "wait" and day_only.resume_at_unix_s == utc(2027, 1, 16)
    both = check(budgets, "p", spent_at("p", acc_day=10**9, acc_month=10 * 10**9), 1, T)
    assert both.action == "wait" and both.resume_at_unix_s == utc(2027, 2, 1)
    assert both.blocked is not None and both.blocked.period == "month"
    assert {u.period for u in both.over} == {"day", "month"}


def test_a_call_that_can_never_fit_is_refused_even_when_waiting():
    budgets = Budgets(account=Budget(per_day_usd=1.0), on_exceed="wait")
    verdict = check(budgets, "p", {}, 10**9 + 1, T)
    assert verdict.action == "refuse" and verdict.never_fits
    assert verdict.resume_at_unix_s is None and "never fit" in verdict.reason
    zero = Budgets(account=Budget(per_day_usd=0.0), on_exceed="wait")
    assert check(zero, "p", {}, 0, T).ok  # a free call fits a zero budget
    assert check(zero, "p", {}, 1, T).never_fits


def test_warnings_name_the_budgets_past_the_warning_share():
    budgets = Budgets(account=Budget(per_month_usd=10.0),
                      providers={"p": Budget(per_day_usd=1.0)}, warn_share=0.5)
    verdict = check(budgets, "p", spent_at("p", acc_month=4 * 10**9, p_day=499_999_999), 1, T)
    assert verdict.ok and [(u.scope, u.period) for u in verdict.warnings] == [
        ("provider", "day")]
    assert verdict.warnings[0].share == pytest.approx(0.499999999)
    assert check(budgets, "p", {}, 0, T).warnings == ()


def test_check_refuses_a_negative_estimate():
    with pytest.raises(InvalidArgument):
        check(Budgets(), "p", {}, -1, T)


# --- the protocol: reserve, check, hand back, settle -----------------------------------------
class Totals:
    """``add_spend`` and ``read_spend`` of a store, in memory."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}

    def add_spend(self, changes: Sequence[tuple[str, int, int]]) -> list[int]:
        out = []
        for key, amount, _ in changes:
            self.totals[key] = self.totals.get(key, 0) + amount
            out.append(self.totals[key])
        return out

    def read_spend(self, keys: Sequence[str]) -> list[int]:
        return [self.totals.get(k, 0) for k in keys]


CALLS = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 600), st.booleans()),
                 min_size=1, max_size=25)


@settings(max_examples=200, deadline=None)
@given(CALLS, st.integers(0, 1500), st.randoms(use_true_random=False))
def test_the_protocol_keeps_spend_within_the_budget_plus_in_flight_overruns(calls, limit,
                                                                             random):
    """Calls start and finish interleaved; each reserves its estimate, is checked, is handed
    back if refused, and settles its real cost. The account's spend ends at most the limit
    plus what the calls in flight at the last admission cost beyond their estimates."""
    store, budgets = Totals(), Budgets(account=Budget(per_day_usd=limit / 10**9))
    exp = [0] * 4
    keys = period_keys("p", T)
    in_flight: dict[int, tuple[int, int]] = {}
    bound_at_last: int | None = None
    pending = list(enumerate(calls))
    spent_total = 0
    while pending or in_flight:
        if pending and (not in_flight or random.random() < 0.6):
            i, (estimate, cost, _) = pending.pop(0)
            totals = store.add_spend(charge(keys, estimate, 0, exp))
            spent = {k: v - estimate for k, v in net_spent(keys, totals).items()}
            verdict = check(budgets, "p", spent, estimate, T)
            if verdict.ok:
                in_flight[i] = (estimate, cost)
                net = net_spent(keys, store.read_spend(read_keys(keys)))[keys[0].key]
                assert net <= limit  # reserved and spent, within the limit at admission
                bound_at_last = sum(max(c - e, 0) for e, c in in_flight.values())
            else:
                store.add_spend(charge(keys, 0, estimate, exp))
        else:
            i = random.choice(sorted(in_flight))
            estimate, cost = in_flight.pop(i)
            store.add_spend(charge(keys, max(cost - estimate, 0), max(estimate - cost, 0), exp))
            spent_total += cost
    final = net_spent(keys, store.read_spend(read_keys(keys)))[keys[0].key]
    assert final == spent_total  # every reservation was settled or handed back exactly
    if bound_at_last is not None:
        assert final <= limit + bound_at_last
