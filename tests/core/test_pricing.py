"""Prices and costs: usage by kind from the providers' responses (documented shapes, and
garbage, which never raises), the default table's lookups, exact integer costs rounded up."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cross_instance.core.modelmatch import pattern_problem
from cross_instance.core.pricing import (
    DEFAULT_PRICES,
    PRICES_DATE,
    Price,
    TokenUsage,
    cost_nano_usd,
    estimate_cost_nano_usd,
    price_for,
    usage_of,
)
from cross_instance.core.usage import usage_from_body

JSON = "application/json"
SSE = "text/event-stream; charset=utf-8"


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def sse(*events: object) -> bytes:
    out = []
    for e in events:
        if isinstance(e, dict) and isinstance(e.get("type"), str):
            out.append(f"event: {e['type']}")
        out += ["data: " + (e if isinstance(e, str) else json.dumps(e)), ""]
    return "\r\n".join(out).encode()


# --- usage of a response ----------------------------------------------------------------------
def test_openai_chat_takes_the_cached_tokens_out_of_the_prompt():
    data = {"usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
                      "prompt_tokens_details": {"cached_tokens": 1024},
                      "completion_tokens_details": {"reasoning_tokens": 100}}}
    assert usage_of(body(data), JSON) == TokenUsage(176, 300, 1024)
    # the same total as core.usage counts for rate limits
    got = usage_of(body(data), JSON)
    assert got is not None and got.input + got.cached_input + got.output == \
        usage_from_body(body(data), JSON)


def test_deepseek_cache_hits_count_as_cached_input():
    data = {"usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
                      "prompt_cache_hit_tokens": 60, "prompt_cache_miss_tokens": 40}}
    assert usage_of(body(data), JSON) == TokenUsage(40, 5, 60)


def test_openai_responses_and_embeddings():
    responses = {"object": "response", "usage": {
        "input_tokens": 500, "input_tokens_details": {"cached_tokens": 200},
        "output_tokens": 90, "output_tokens_details": {"reasoning_tokens": 40},
        "total_tokens": 590}}
    assert usage_of(body(responses), JSON) == TokenUsage(300, 90, 200)
    embeddings = {"object": "list", "data": [], "usage": {"prompt_tokens": 8,
                                                           "total_tokens": 8}}
    assert usage_of(body(embeddings), JSON) == TokenUsage(8, 0)


def test_anthropic_keeps_cache_reads_and_writes_apart():
    data = {"type": "message", "usage": {"input_tokens": 20, "output_tokens": 503,
                                         "cache_creation_input_tokens": 100,
                                         "cache_read_input_tokens": 2000}}
    assert usage_of(body(data), JSON) == TokenUsage(20, 503, 2000, 100)
    plain = {"type": "message", "usage": {"input_tokens": 20, "output_tokens": 3,
                                          "cache_creation_input_tokens": None,
                                          "cache_read_input_tokens": None}}
    assert usage_of(body(plain), JSON) == TokenUsage(20, 3)


def test_gemini_counts_thoughts_as_output_and_cached_content_apart():
    data = {"candidates": [], "usageMetadata": {
        "promptTokenCount": 1000, "cachedContentTokenCount": 600, "candidatesTokenCount": 50,
        "thoughtsTokenCount": 25, "totalTokenCount": 1075}}
    assert usage_of(body(data), JSON) == TokenUsage(400, 75, 600)


def test_openai_chat_stream_final_chunk():
    chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "Hi"}}],
             "usage": None}
    final = {"object": "chat.completion.chunk", "choices": [],
             "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                       "prompt_tokens_details": {"cached_tokens": 4}}}
    assert usage_of(sse(chunk, chunk, final, "[DONE]"), SSE) == TokenUsage(6, 2, 4)
    assert usage_of(sse(chunk, "[DONE]"), SSE) is None  # no include_usage: nothing said


def test_responses_stream_completed_event():
    created = {"type": "response.created", "response": {"usage": None}}
    delta = {"type": "response.output_text.delta", "delta": "Hi"}
    done = {"type": "response.completed", "response": {"usage": {
        "input_tokens": 30, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 7, "total_tokens": 37}}}
    assert usage_of(sse(created, delta, done), SSE) == TokenUsage(30, 7)
    assert usage_of(sse(created, delta), SSE) is None


def test_anthropic_stream_start_then_cumulative_deltas():
    start = {"type": "message_start", "message": {"usage": {
        "input_tokens": 25, "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 10, "output_tokens": 1}}}
    ping = {"type": "ping"}
    d1 = {"type": "message_delta", "usage": {"output_tokens": 15}}
    d2 = {"type": "message_delta", "usage": {"output_tokens": 40}}
    assert usage_of(sse(start, ping, d1, d2, {"type": "message_stop"}), SSE) == \
        TokenUsage(25, 40, 1000, 10)
    assert usage_of(sse(start), SSE) == TokenUsage(25, 1, 1000, 10)  # cut off early
    # newer deltas repeat the input counts, cumulative too
    d3 = {"type": "message_delta", "usage": {"input_tokens": 25, "output_tokens": 41,
                                             "cache_read_input_tokens": 1000}}
    assert usage_of(sse(start, d3), SSE) == TokenUsage(25, 41, 1000, 10)


def test_gemini_stream_takes_the_last_usage():
    first = {"candidates": [], "usageMetadata": {"promptTokenCount": 9,
                                                 "candidatesTokenCount": 1}}
    last = {"candidates": [], "usageMetadata": {"promptTokenCount": 9,
                                                "candidatesTokenCount": 12}}
    assert usage_of(sse(first, last), SSE) == TokenUsage(9, 12)


@pytest.mark.parametrize("raw", [
    b"", b"null", b"[]", b"{}", b'{"usage": null}', b'{"usage": {"prompt_tokens": -1}}',
    b'{"usage": {"prompt_tokens": true}}', b'{"usage": {"prompt_tokens": "5"}}',
    b'{"usage": {"input_tokens": 3}}', b'{"usageMetadata": {}}', b"\xff\xfe", b"[" * 100_000,
    b'{"usage": {"prompt_tokens": 1' + b"0" * 5000 + b"}}",
])
def test_absent_or_unreadable_usage_is_none(raw):
    assert usage_of(raw, JSON) is None
    assert usage_of(raw, SSE) is None
    assert usage_of(b"data: " + raw, SSE) is None


COUNT = st.one_of(st.integers(0, 10**6), st.integers(-5, -1), st.booleans(), st.none(),
                  st.text(max_size=3), st.floats(allow_nan=False))
USAGE_LIKE = st.fixed_dictionaries({}, optional={
    k: COUNT | st.dictionaries(st.sampled_from(["cached_tokens"]), COUNT, max_size=1)
    for k in ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
              "cache_read_input_tokens", "cache_creation_input_tokens", "total_tokens",
              "prompt_tokens_details", "input_tokens_details", "prompt_cache_hit_tokens",
              "promptTokenCount", "candidatesTokenCount", "cachedContentTokenCount")})
EVENT = st.one_of(
    st.fixed_dictionaries({"usage": USAGE_LIKE}),
    st.fixed_dictionaries({"usageMetadata": USAGE_LIKE}),
    st.fixed_dictionaries({"type": st.sampled_from(["message_start", "message_delta",
                                                    "response.completed", "x"]),
                           "message": st.fixed_dictionaries({"usage": USAGE_LIKE}),
                           "usage": USAGE_LIKE, "response": st.fixed_dictionaries(
                               {"usage": USAGE_LIKE})}),
    st.recursive(st.none() | st.integers() | st.text(max_size=4),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8))


def _sound(found: TokenUsage | None) -> bool:
    return found is None or all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                for v in (found.input, found.output, found.cached_input,
                                          found.cache_write))


@given(st.binary(max_size=300), st.sampled_from([JSON, SSE, "", "text/plain"]))
def test_any_bytes_give_usage_or_none_never_an_exception(raw, content_type):
    assert _sound(usage_of(raw, content_type))


@settings(max_examples=50, deadline=None)
@given(st.lists(EVENT, max_size=4))
def test_any_usage_shaped_json_gives_sound_counts_or_none(events):
    assert _sound(usage_of(body(events[0] if events else {}), JSON))
    assert _sound(usage_of(sse(*events), SSE))


# --- the price table --------------------------------------------------------------------------
def test_the_default_table_has_the_well_known_models_under_valid_patterns():
    assert PRICES_DATE == "2026-12-07"
    assert set(DEFAULT_PRICES) == {"openai", "anthropic", "deepseek", "gemini"}
    for provider, table in DEFAULT_PRICES.items():
        for pattern, price in table.items():
            assert pattern_problem(pattern) is None, (provider, pattern)
            assert price.input >= 0 and price.output >= 0
            assert cost_nano_usd(price, TokenUsage(1, 1, 1, 1)) > 0
    expected = {
        ("openai", "gpt-4o"): 2.50, ("openai", "gpt-4o-2024-08-06"): 2.50,
        ("openai", "gpt-4o-mini"): 0.15, ("openai", "gpt-4o-mini-2024-07-18"): 0.15,
        ("openai", "gpt-4.1"): 2.00, ("openai", "gpt-4.1-mini-2025-04-14"): 0.40,
        ("openai", "gpt-4.1-nano"): 0.10, ("openai", "o3"): 2.00, ("openai", "o3-mini"): 1.10,
        ("openai", "o4-mini-2025-04-16"): 1.10, ("openai", "gpt-5"): 1.25,
        ("openai", "gpt-5-mini"): 0.25, ("openai", "gpt-5-nano"): 0.05,
        ("openai", "text-embedding-3-small"): 0.02, ("openai", "text-embedding-3-large"): 0.13,
        ("anthropic", "claude-opus-4-1-20250805"): 15.0,
        ("anthropic", "claude-opus-4-5-20251101"): 5.0,
        ("anthropic", "claude-sonnet-4-5"): 3.0, ("anthropic", "claude-3-5-haiku-latest"): 0.80,
        ("anthropic", "claude-haiku-4-5"): 1.0, ("deepseek", "deepseek-chat"): 0.28,
        ("deepseek", "deepseek-reasoner"): 0.28, ("gemini", "gemini-2.5-pro"): 1.25,
        ("gemini", "gemini-2.5-flash"): 0.30, ("gemini", "gemini-2.5-flash-lite"): 0.10,
    }
    for (provider, model), usd in expected.items():
        price = price_for(DEFAULT_PRICES, provider, model)
        assert price is not None and price.input == usd, (provider, model, price)


def test_price_for_takes_the_most_specific_pattern_or_none():
    prices = {"p": {"m*": Price(1, 1), "m-large*": Price(2, 2), "m-large-1": Price(3, 3)}}
    assert price_for(prices, "p", "m-small") == Price(1, 1)
    assert price_for(prices, "p", "m-large-2") == Price(2, 2)
    assert price_for(prices, "p", "m-large-1") == Price(3, 3)
    assert price_for(prices, "p", "other") is None
    assert price_for(prices, "q", "m") is None
    assert price_for(DEFAULT_PRICES, "openai", "no-such-model") is None


# --- costs ------------------------------------------------------------------------------------
def test_costs_are_exact_nano_dollars_rounded_up():
    gpt4o = Price(2.50, 10.00, 1.25)
    assert cost_nano_usd(gpt4o, TokenUsage(1_000_000, 0)) == 2_500_000_000
    assert cost_nano_usd(gpt4o, TokenUsage(1000, 500, 200)) == 2_500_000 + 5_000_000 + 250_000
    assert cost_nano_usd(Price(0.1, 0.3), TokenUsage(3, 7)) == 300 + 2100  # 0.1 is 1/10
    assert cost_nano_usd(Price(0.0001, 0), TokenUsage(1, 0)) == 1  # 0.1 nano: rounded up
    assert cost_nano_usd(Price(0.075, 0), TokenUsage(1, 0)) == 75
    # None: cached at the input price, cache writes at 1.25 x input
    assert cost_nano_usd(Price(4.0, 0), TokenUsage(0, 0, 10, 0)) == 40_000
    assert cost_nano_usd(Price(4.0, 0), TokenUsage(0, 0, 0, 10)) == 50_000
    assert cost_nano_usd(Price(3.0, 15.0, 0.30, 3.75), TokenUsage(10, 2, 100, 20)) == \
        30_000 + 30_000 + 30_000 + 75_000
    assert cost_nano_usd(Price(1, 1), TokenUsage(0, 0)) == 0
    with pytest.raises(ValueError):
        cost_nano_usd(Price(-1, 1), TokenUsage(1, 1))
    with pytest.raises(ValueError):
        cost_nano_usd(Price(1, 1), TokenUsage(-1, 1))


def test_an_estimate_is_the_input_and_the_whole_output_allowance():
    price = Price(3.0, 15.0, 0.30, 3.75)
    assert estimate_cost_nano_usd(price, 1000, 4096) == 3_000_000 + 61_440_000
    assert estimate_cost_nano_usd(price, 0, 0) == 0


PRICE = st.builds(Price, st.floats(0, 100), st.floats(0, 200),
                  st.none() | st.floats(0, 100), st.none() | st.floats(0, 100))
USAGE = st.builds(TokenUsage, st.integers(0, 10**7), st.integers(0, 10**7),
                  st.integers(0, 10**7), st.integers(0, 10**7))


def _exact_usd_tokens(price: Price, usage: TokenUsage) -> Fraction:
    def f(x: float) -> Fraction:
        from decimal import Decimal
        return Fraction(Decimal(repr(x)))

    cached = price.input if price.cached_input is None else price.cached_input
    write = f(price.input) * Fraction(5, 4) if price.cache_write is None else f(price.cache_write)
    return (f(price.input) * usage.input + f(price.output) * usage.output
            + f(cached) * usage.cached_input + write * usage.cache_write)


@given(PRICE, USAGE, USAGE)
def test_a_cost_is_the_exact_one_rounded_up_and_adds_up_within_one_nano(price, a, b):
    exact = _exact_usd_tokens(price, a) * 1000  # USD per million tokens -> nano per token
    cost = cost_nano_usd(price, a)
    assert exact <= cost < exact + 1
    both = TokenUsage(a.input + b.input, a.output + b.output, a.cached_input + b.cached_input,
                      a.cache_write + b.cache_write)
    assert cost_nano_usd(price, both) <= cost + cost_nano_usd(price, b) \
        <= cost_nano_usd(price, both) + 1


@given(PRICE, st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6),
       st.integers(0, 10**6))
def test_an_estimate_covers_any_call_within_it_without_cache_writes(price, inp, out, used_in,
                                                                    used_out):
    used_in, used_out = min(used_in, inp), min(used_out, out)
    estimate = estimate_cost_nano_usd(price, inp, out)
    assert estimate == cost_nano_usd(price, TokenUsage(inp, out))
    cached = min(used_in // 2, used_in)
    if price.cached_input is None or price.cached_input <= price.input:
        assert cost_nano_usd(price, TokenUsage(used_in - cached, used_out, cached)) <= estimate
