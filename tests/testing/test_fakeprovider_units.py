"""Pure pieces of the fake provider: header formatting, the limit state, stats, bodies."""

from __future__ import annotations

import pytest

from cross_instance.testing.fakeprovider import (
    BucketView,
    FakeProvider,
    Limits,
    format_openai_duration,
    format_rfc3339,
    parse_openai_duration,
    ratelimit_headers,
    retry_headers,
)
from cross_instance.testing.fakeprovider import responses as rs
from cross_instance.testing.fakeprovider.stats import StatsRecorder

MS = 1_000_000
S = 1_000_000_000


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"), (-5, "0s"), (1, "1ms"), (120 * MS, "120ms"), (999 * MS + 1, "1s"),
        (S, "1s"), (1500 * MS, "1.5s"), (2 * S + 250 * MS, "2.25s"), (360 * S, "6m0s"),
        (90 * S + 250 * MS, "1m30.25s"), (3723 * S, "1h2m3s"), (3600 * S, "1h0m0s"),
    ],
)
def test_format_openai_duration(ns: int, text: str) -> None:
    assert format_openai_duration(ns) == text


@pytest.mark.parametrize("ns", [0, MS, 120 * MS, 1999 * MS, 360 * S, 3723 * S + 7 * MS])
def test_parse_openai_duration_round_trips(ns: int) -> None:
    assert parse_openai_duration(format_openai_duration(ns)) == ns


@pytest.mark.parametrize("bad", ["", "1", "s", "1x", "1s2", "abc"])
def test_parse_openai_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_openai_duration(bad)


def test_format_rfc3339_rounds_up_to_seconds() -> None:
    assert format_rfc3339(0) == "1970-01-01T00:00:00Z"
    assert format_rfc3339(1) == "1970-01-01T00:00:01Z"
    assert format_rfc3339(1_700_000_000 * S) == "2023-11-14T22:13:20Z"


def test_header_sets() -> None:
    req, tok = BucketView(60, 2, S), BucketView(1000, 900, 6 * S)
    assert ratelimit_headers("openai", req, None, 0) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "1s",
    }
    assert ratelimit_headers("openai", req, tok, 0)["x-ratelimit-reset-tokens"] == "6s"
    anth = ratelimit_headers("anthropic", req, tok, 0)
    assert anth["anthropic-ratelimit-requests-reset"] == "1970-01-01T00:00:01Z"
    for kind in ("tokens", "input-tokens", "output-tokens"):
        assert anth[f"anthropic-ratelimit-{kind}-remaining"] == "900"
    assert ratelimit_headers("none", req, tok, 0) == {}
    assert retry_headers("openai", 1500 * MS, True) == {"retry-after": "2",
                                                         "retry-after-ms": "1500"}
    assert retry_headers("anthropic", 1500 * MS, True) == {"retry-after": "2"}
    assert retry_headers("openai", 1500 * MS, False) == {}
    assert retry_headers("openai", None, True) == {}


class Clock:
    def __init__(self) -> None:
        self.now = 10 * S

    def __call__(self) -> int:
        return self.now


def test_limits_charge_only_admitted_requests() -> None:
    clock = Clock()
    lim = Limits(60, 2, tokens_per_minute=600, clock=clock)  # 1 req/s, 10 tokens/s
    first = lim.decide(500)
    assert first.admitted and first.requests.remaining == 1 and first.tokens is not None
    assert first.tokens.remaining == 100 and first.tokens.reset_ns == 50 * S
    second = lim.decide(200)  # tokens short by 100 -> 10 s
    assert not second.admitted and second.wait_ns == 10 * S
    assert second.requests.remaining == 1  # the request bucket was not charged
    never = lim.decide(601)
    assert not never.admitted and never.wait_ns is None
    clock.now += 10 * S
    assert lim.decide(200).admitted


def test_limits_set_keeps_debt_in_tokens() -> None:
    clock = Clock()
    lim = Limits(60, 4, clock=clock)
    for _ in range(4):
        assert lim.decide(1).admitted
    lim.set(requests_per_minute=6000)  # 4 tokens of debt, now 10 ms each
    assert not lim.decide(1).admitted
    clock.now += 10 * MS
    assert lim.decide(1).admitted
    cfg = lim.set(tokens_per_minute=100)
    assert (cfg.tokens_per_minute, cfg.token_burst, cfg.burst) == (100, 100, 4)
    assert lim.set(tokens_per_minute=None).tokens_per_minute is None
    with pytest.raises(ValueError):
        lim.set(burst=0)


def test_stats_recorder_is_bounded() -> None:
    rec = StatsRecorder(origin_ns=100, max_events=3)
    for i, status in enumerate([200, 429, 200, 400, 200]):
        rec.record("c" if i % 2 else "d", status, 100 + i)
    snap = rec.snapshot(events=True)
    assert (snap["requests"], snap["ok"], snap["rate_limited"], snap["bad_request"]) == (5, 3, 1, 1)
    assert snap["events"] == [[2, "d", 200], [3, "c", 400], [4, "d", 200]]
    assert "events" not in rec.snapshot()
    rec.reset()
    assert rec.snapshot(events=True)["events"] == [] and rec.snapshot()["requests"] == 0


def test_token_estimate_and_reply_cut() -> None:
    body = {"model": "m", "system": "abcd", "max_tokens": 10,
            "messages": [{"role": "user", "content": "x" * 9},
                         {"role": "user", "content": [{"type": "text", "text": "yyy"}]}]}
    assert rs.prompt_chars(body) == 16 and rs.token_cost(body) == 14
    pieces, truncated = rs.reply_pieces(3)
    assert len(pieces) == 3 and truncated
    assert "".join(rs.reply_pieces(None)[0]) == rs.REPLY_TEXT


def test_seeded_latency_and_validation() -> None:
    a = FakeProvider(latency_s=(0.01, 0.02), seed=7)
    b = FakeProvider(latency_s=(0.01, 0.02), seed=7)
    draws = [a.draw_latency() for _ in range(5)]
    assert draws == [b.draw_latency() for _ in range(5)]
    assert all(0.01 <= d <= 0.02 for d in draws)
    for kwargs in ({"host": "0.0.0.0"}, {"latency_s": -1.0}, {"latency_s": (0.2, 0.1)},
                   {"header_style": "bogus"}, {"burst": 0}, {"token_burst": 5}):
        with pytest.raises(ValueError):
            FakeProvider(**kwargs)
