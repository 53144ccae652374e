"""permit.report(): real responses from the fake provider teach every instance the limit."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import httpx
import pytest

from cross_instance.core.limits import ProviderLimits
from cross_instance.runtime import Runtime
from cross_instance.testing.fakeprovider import FakeProvider
from tests.helpers_runtime import make_config

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture
def fake():
    with FakeProvider(requests_per_minute=120, burst=2, header_style="openai") as f:
        yield f


def test_stated_limit_and_429_cooldown_reach_every_instance(tmp_path, fake):
    cfg = dataclasses.replace(make_config(tmp_path / "state"),
                              providers=MappingProxyType({"fake": ProviderLimits(600, 10)}))
    url = fake.base_url_openai + "/chat/completions"
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="a") as a, \
            Runtime.start(cwd=tmp_path, config=cfg, instance_id="b") as b, httpx.Client() as http:
        permits = [a.permit("fake") for _ in range(3)]  # all granted before any answer
        answers = [http.post(url, json=BODY) for _ in permits]
        assert [r.status_code for r in answers] == [200, 200, 429]
        for p, r in zip(permits, answers, strict=False):
            if r.status_code == 429:
                with pytest.raises(httpx.HTTPStatusError) as err:
                    r.raise_for_status()
                p.report(error=err.value)  # the SDK-exception form
            else:
                p.report(r.status_code, r.headers)
            p.release()
        bucket = b.status()["providers"]["fake"]
        assert b.try_permit("fake") is None  # b never talked to the provider: cooldown shared
        view = {x.key: x for x in b.store.snapshot().buckets}["r:fake"]
        assert view.learned_rate == 120.0 and view.reported_limit == 120
        assert view.cooldown_until_ns > b.store.now_ns()
        assert bucket["requestsPerMinute"] == 600  # configured stays visible
        a.adaptive_log.flush()
    text = (tmp_path / ".pi" / "logs" / "adaptive-rate-controller.log").read_text()
    assert "Reduced requests per minute from 600 to 120" in text
    assert "Cooldown: every instance waits" in text
    assert "same congestion epoch: rate stays at 120" in text  # no second cut
    assert "Reduced requests per minute from 120" not in text


def test_garbage_and_other_errors_change_nothing(tmp_path):
    with Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "s")) as rt:
        p = rt.permit("p")
        p.report(200, {"x-ratelimit-limit-requests": "lots", "retry-after": "later"})
        p.report(500, {})
        p.report(error=ConnectionError("reset by peer"))
        view = {x.key: x for x in rt.store.snapshot().buckets}["r:p"]
        assert view.learned_rate is None and view.cooldown_until_ns == 0


def test_usage_tokens_refund_or_charge_the_estimate(tmp_path):
    from cross_instance.errors import PermitRequestError

    cfg = make_config(tmp_path / "s", tokens_per_minute=60, token_burst=100)  # 1 token/s

    def tokens_left(rt):
        return rt.status()["providers"]["p"]["tokensAvailable"]

    with Runtime.start(cwd=tmp_path, config=cfg) as rt:
        p = rt.permit("p", tokens=80)
        assert tokens_left(rt) == 20
        p.report(200, {}, usage_tokens=10)  # used less than estimated: 70 come back
        assert 90 <= tokens_left(rt) <= 91
        q = rt.permit("p", tokens=10)
        q.report(200, {}, usage_tokens=60)  # used more: 50 more are charged
        assert 30 <= tokens_left(rt) <= 31
        with pytest.raises(PermitRequestError, match="usage_tokens"):
            q.report(200, {}, usage_tokens=-1)


def test_token_limits_are_learned_from_token_headers(tmp_path):
    cfg = dataclasses.replace(make_config(tmp_path / "state"), providers=MappingProxyType({
        "fake": ProviderLimits(600, 10, tokens_per_minute=100_000, token_burst=100_000)}))
    with FakeProvider(requests_per_minute=600, burst=10, tokens_per_minute=30_000,
                      header_style="openai") as fake, \
            Runtime.start(cwd=tmp_path, config=cfg) as rt, httpx.Client() as http:
        with rt.permit("fake", tokens=50) as p:
            r = http.post(fake.base_url_openai + "/chat/completions", json=BODY)
            p.report(r.status_code, r.headers)
        view = {x.key: x for x in rt.store.snapshot().buckets}
        assert view["t:fake"].learned_rate == 30_000 and view["t:fake"].reported_limit == 30_000
        assert view["r:fake"].reported_limit == 600  # stated, equal to the configured limit


ABSURD_HINTS = [
    ({"retry-after": "99999999"}, None, "retry-after of 99999999.000s"),
    ({"retry-after-ms": "1e15"}, None, "retry-after of"),
    ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, None, "retry-after of"),
    ({}, '{"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",'
         ' "retryDelay": "99999999s"}]}}', "retry-after of 99999999.000s"),
    ({"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "0",
      "anthropic-ratelimit-requests-reset": "2999-01-01T00:00:00Z"}, None, "requests reset of"),
    ({"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "0",
      "x-ratelimit-reset-requests": "9999999h"}, None, "requests reset of"),
]


@pytest.mark.parametrize("headers, body, logged", ABSURD_HINTS)
def test_an_absurd_hint_is_clamped_to_the_maximum_cooldown_and_logged(tmp_path, headers, body,
                                                                         logged):
    from cross_instance.core.limits import AdaptiveSettings

    cfg = dataclasses.replace(make_config(tmp_path / "s"),
                              adaptive=AdaptiveSettings(max_cooldown_ms=5_000))
    with Runtime.start(cwd=tmp_path, config=cfg) as rt:
        with rt.permit("p") as p:
            p.report(429, headers, body=body)
        view = {x.key: x for x in rt.store.snapshot().buckets}["r:p"]
        left = view.cooldown_until_ns - rt.store.now_ns()
        assert 0 < left <= 5 * 10**9
        rt.adaptive_log.flush()
    text = (tmp_path / ".pi" / "logs" / "adaptive-rate-controller.log").read_text()
    assert f"Clamped the provider's {logged}" in text
    assert "to the maximum cooldown 5.000s (adaptiveRateControl.maxCooldownMs) for p" in text


@pytest.mark.parametrize("headers", [
    {"retry-after": "-5"}, {"retry-after": "NaN"}, {"retry-after": "inf"},
    {"retry-after-ms": "-1e308"}, {"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"},
    {"retry-after": "1" * 5000},
])
def test_negative_past_or_non_finite_hints_set_no_long_cooldown(tmp_path, headers):
    with Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "s")) as rt:
        with rt.permit("p") as p:
            p.report(429, headers)
        view = {x.key: x for x in rt.store.snapshot().buckets}["r:p"]
        assert view.cooldown_until_ns - rt.store.now_ns() <= 300 * 10**9
        rt.adaptive_log.flush()
    log = tmp_path / ".pi" / "logs" / "adaptive-rate-controller.log"
    assert "Clamped" not in log.read_text()
