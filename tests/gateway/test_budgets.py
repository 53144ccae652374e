"""Spend budgets (issue 17): enforced across every instance and every path. Concurrent
gateway clients never take a budget past its limit (their estimates are exact here, so the
bound is the budget itself); a budget reached is the provider's 429 at the gateway and
``BudgetExceeded`` for a library permit, which shares it; ``pi-xi limits`` shows what is
spent and left; the warning at ``warnShare`` is an event and a metric."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import httpx
import pytest
from typer.testing import CliRunner

from cross_instance import BudgetExceeded, Runtime
from cross_instance.core.budgets import Budget, Budgets
from cross_instance.core.pricing import DEFAULT_PRICES, Price
from cross_instance.stores import open_store
from cross_instance.stores.sqlite.store import SqliteStore
from cross_instance.testing.fakeprovider import FakeProvider
from tests.conftest import redis_prefix
from tests.daemon.served_app import served_app
from tests.gateway.conftest import KEY, gateway_config

# $1,000 per million tokens: a token costs $0.001; "hi" is 1 prompt token, 5 come back
PRICE = Price(1000.0, 1000.0)
CALL_USD = 0.006
BUDGET_USD = 0.1
CHAT = {"model": "bud-1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _config(fake: FakeProvider, state: Path, on_exceed: str = "refuse") -> object:
    prices = {**DEFAULT_PRICES, "local": MappingProxyType({"bud-*": PRICE})}
    return replace(gateway_config(fake), runtime_dir=state,
                   budgets=Budgets(Budget(per_day_usd=BUDGET_USD), on_exceed=on_exceed),
                   prices=MappingProxyType(prices))


@contextmanager
def _store_url(kind: str, state: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite://{state}"
        return
    with redis_prefix() as url:
        yield url


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_concurrent_clients_never_pass_the_budget(tmp_path: Path, kind: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    with FakeProvider(requests_per_minute=60_000, burst=1000) as fake, \
            _store_url(kind, state) as store_url:
        cfg = _config(fake, state)
        with served_app(open_store(store_url), cfg) as run:  # type: ignore[arg-type]
            url = f"{run.base}/local/v1/chat/completions"
            statuses: Counter[int] = Counter()
            codes: Counter[str] = Counter()
            lock = threading.Lock()

            def client() -> None:
                with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as http:
                    for _ in range(10):
                        reply = http.post(url, json=CHAT)
                        with lock:
                            statuses[reply.status_code] += 1
                            if reply.status_code == 429:
                                codes[reply.json()["error"]["code"]] += 1

            threads = [threading.Thread(target=client) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            ok = statuses[200]
            assert ok * CALL_USD <= BUDGET_USD + 1e-9  # never past the budget
            assert ok >= int(BUDGET_USD / CALL_USD) - 1  # and it was spent, not wasted
            assert codes == {"budget_exceeded": statuses[429]} and statuses[429] > 0
            assert fake.stats()["requests"] == ok  # the refused never reached the provider
            limits = httpx.get(f"{run.base}/v1/limits").json()
            line = next(b for b in limits["budgets"] if b["period"] == "day")
            assert line["spentUsd"] == pytest.approx(ok * CALL_USD)
            assert line["leftUsd"] == pytest.approx(BUDGET_USD - ok * CALL_USD)
            kinds = {e.kind for e in run.daemon.store.events(0, 1000)}
            assert {"budget_warning", "budget_exceeded"} <= kinds
            metrics = httpx.get(f"{run.base}/metrics").text
            assert 'pi_xi_budget_events_total{kind="budget_warning"' in metrics
            assert 'pi_xi_budget_used_share{period="day",provider="",scope="account"}' in metrics

            # a library permit on the same store shares the budget: nothing is left for it
            rt = Runtime.start(config=cfg, store=open_store(store_url))  # type: ignore[arg-type]
            try:
                with pytest.raises(BudgetExceeded) as refused:
                    rt.permit("local", model="bud-1", tokens=10)
                assert refused.value.retry_after is None  # refuse: no waiting
            finally:
                rt.close()
    if kind != "sqlite":
        return
    # pi-xi limits, from the config file of a directory using the same state
    (tmp_path / ".pi").mkdir()
    (tmp_path / ".pi" / "config.json").write_text(json.dumps({"crossInstance": {
        "runtimeDir": str(state), "budgets": {"account": {"perDayUsd": BUDGET_USD}}}}))
    from cross_instance.cli.app import app

    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(app, ["limits"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert "Spend budgets (UTC periods):" in shown.output
    assert f"${ok * CALL_USD:.4f} of ${BUDGET_USD:.4f} spent" in shown.output


def test_library_permits_reserve_and_settle(tmp_path: Path) -> None:
    """Sync and async permits: the estimate is reserved, the real usage settles it, and a
    permit that would pass the budget is refused before it takes any capacity."""
    state = tmp_path / "state"
    with FakeProvider() as fake:
        cfg = _config(fake, state)
    rt = Runtime.start(config=cfg, store=SqliteStore(state))  # type: ignore[arg-type]
    try:
        for _ in range(8):  # reserve 20 tokens ($0.02), settle at 6 ($0.006)
            with rt.permit("local", model="bud-1", tokens=20) as p:
                p.report(200, usage_tokens=6)

        async def more() -> None:
            for _ in range(4):
                async with rt.apermit("local", model="bud-1", tokens=20) as p:
                    await rt.areport(p, 200, usage_tokens=6)

        asyncio.run(more())
        from cross_instance.views.limits import read_budgets

        spent = read_budgets(rt.store, rt.config)[0]["spentUsd"]  # type: ignore[arg-type]
        assert spent == pytest.approx(12 * CALL_USD)
        with pytest.raises(BudgetExceeded):  # $0.072 + $0.03 > $0.1
            rt.permit("local", model="bud-1", tokens=30)
        fits = rt.try_permit("local", model="bud-1", tokens=20)  # $0.092 fits
        assert fits is not None
        fits.release()
    finally:
        rt.close()


def test_waiting_for_the_next_period_is_bounded(tmp_path: Path) -> None:
    """``onExceed: wait``: a wait that would run past the bound (the gateway's maxWaitMs, a
    permit's timeout) ends at once with the time to the next UTC day, not at midnight."""
    import time

    from cross_instance.core.upstreams import GatewaySettings

    state = tmp_path / "state"
    with FakeProvider(requests_per_minute=60_000, burst=1000) as fake:
        cfg = replace(_config(fake, state, "wait"),  # type: ignore[type-var]
                      gateway=GatewaySettings(max_wait_ms=100))
        with served_app(SqliteStore(state), cfg) as run:  # type: ignore[arg-type]
            url = f"{run.base}/local/v1/chat/completions"
            auth = {"Authorization": f"Bearer {KEY}"}
            while httpx.post(url, json=CHAT, headers=auth).status_code == 200:
                pass
            began = time.monotonic()
            reply = httpx.post(url, json=CHAT, headers=auth)
            assert time.monotonic() - began < 5
            assert reply.status_code == 429
            assert reply.json()["error"]["code"] == "budget_exceeded"
            to_midnight = 86_400 - time.time() % 86_400
            assert abs(int(reply.headers["retry-after"]) - to_midnight) <= 5
        rt = Runtime.start(config=cfg, store=SqliteStore(state))  # type: ignore[arg-type]
        try:
            with pytest.raises(BudgetExceeded) as held:
                rt.permit("local", model="bud-1", tokens=10, timeout=0.2)
            assert held.value.retry_after is not None
            assert abs(held.value.retry_after - to_midnight) <= 5
        finally:
            rt.close()


def test_a_waiting_call_goes_on_when_the_day_turns(tmp_path: Path) -> None:
    """``onExceed: wait`` with a bound past midnight: a library permit held back by a full
    daily budget is granted once the UTC day turns (the wall clock is moved to just before
    midnight; the store's own clock is not the wall clock and is left alone)."""
    import time

    import time_machine

    state = tmp_path / "state"
    with FakeProvider() as fake:
        cfg = _config(fake, state, "wait")
    midnight = (time.time() // 86_400 + 1) * 86_400
    with time_machine.travel(midnight - 1.0, tick=True):
        rt = Runtime.start(config=cfg, store=SqliteStore(state))  # type: ignore[arg-type]
        try:
            with rt.permit("local", model="bud-1", tokens=90) as p:  # $0.09 of $0.1
                p.report(200, usage_tokens=90)
            began = time.time()
            with rt.permit("local", model="bud-1", tokens=90, timeout=10) as p:
                assert time.time() >= midnight  # it waited for the new day
                p.report(200, usage_tokens=90)
            assert time.time() - began < 8
        finally:
            rt.close()


def test_a_waiting_gateway_request_goes_on_when_the_day_turns(tmp_path: Path) -> None:
    import time

    import time_machine

    from cross_instance.core.upstreams import GatewaySettings

    state = tmp_path / "state"
    midnight = (time.time() // 86_400 + 1) * 86_400
    with FakeProvider(requests_per_minute=60_000, burst=1000) as fake, \
            time_machine.travel(midnight - 1.0, tick=True):
        cfg = replace(_config(fake, state, "wait"),  # type: ignore[type-var]
                      gateway=GatewaySettings(max_wait_ms=10_000))
        with served_app(SqliteStore(state), cfg) as run:  # type: ignore[arg-type]
            url = f"{run.base}/local/v1/chat/completions"
            big = {**CHAT, "max_tokens": 90}  # $0.091 estimated of $0.1
            auth = {"Authorization": f"Bearer {KEY}"}
            assert httpx.post(url, json=big, headers=auth).status_code == 200
            waited = httpx.post(url, json=big, headers=auth, timeout=30)
            assert waited.status_code == 200, waited.text
            assert time.time() >= midnight
