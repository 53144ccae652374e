"""Provider rate-limit signals: real header sets in each provider's format, and garbage."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from cross_instance.core.headers import Reported, parse_duration, parse_response

NOW = datetime(2026, 2, 25, 2, 0, 0, tzinfo=UTC).timestamp()

OPENAI_OK = {  # as api.openai.com sends them on a chat completion
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}
ANTHROPIC_429 = {  # as api.anthropic.com sends them on a rate-limit error
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "0",
    "anthropic-ratelimit-requests-reset": "2026-02-25T02:00:07Z",
    "anthropic-ratelimit-tokens-limit": "80000",
    "anthropic-ratelimit-tokens-remaining": "12000",
    "anthropic-ratelimit-tokens-reset": "2026-02-25T02:00:30Z",
    "anthropic-ratelimit-input-tokens-limit": "40000",
    "anthropic-ratelimit-input-tokens-remaining": "2000",
    "anthropic-ratelimit-input-tokens-reset": "2026-02-25T02:00:03Z",
    "anthropic-ratelimit-output-tokens-limit": "8000",
    "anthropic-ratelimit-output-tokens-remaining": "8000",
    "anthropic-ratelimit-output-tokens-reset": "2026-02-25T02:00:00Z",
    "retry-after": "7",
    "request-id": "req_011CV",
}
GEMINI_429 = json.dumps({"error": {
    "code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED",
    "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"},
    ]}})


def test_openai_headers():
    s = parse_response(200, OPENAI_OK, None, NOW)
    assert not s.rate_limited and s.retry_after_s is None
    assert s.requests == Reported(60, 59, 1.0)
    assert s.tokens == Reported(150000, 149984, 360.0)


def test_openai_429_prefers_retry_after_ms():
    s = parse_response(429, {**OPENAI_OK, "Retry-After": "2", "retry-after-ms": "1500"}, "", NOW)
    assert s.rate_limited and s.retry_after_s == 1.5


def test_anthropic_429_all_buckets():
    s = parse_response(429, ANTHROPIC_429, '{"type":"error"}', NOW)
    assert s.rate_limited and s.retry_after_s == 7.0
    assert s.requests == Reported(50, 0, 7.0)
    assert s.tokens == Reported(80000, 12000, 30.0)
    assert s.input_tokens == Reported(40000, 2000, 3.0)
    assert s.output_tokens == Reported(8000, 8000, 0.0)


def test_anthropic_529_is_overload_not_a_rate_limit():
    body = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    s = parse_response(529, {"retry-after": "5"}, body, NOW)
    assert s.overloaded and not s.rate_limited


def test_retry_after_as_http_date():
    s = parse_response(429, [("Retry-After", "Wed, 25 Feb 2026 02:00:05 GMT")], None, NOW)
    assert s.retry_after_s == 5.0


def test_gemini_retry_info_in_the_body():
    s = parse_response(429, {"content-type": "application/json"}, GEMINI_429, NOW)
    assert s.rate_limited and s.retry_after_s == 13.0 and not s.requests.known


def test_deepseek_sends_nothing():
    s = parse_response(429, {}, '{"error": {"message": "Rate limit reached"}}', NOW)
    assert s.rate_limited and s.retry_after_s is None and not s.requests.known


def test_malformed_values_are_ignored():
    s = parse_response(429, {
        "retry-after": "soon", "retry-after-ms": "NaN",
        "x-ratelimit-limit-requests": "-5", "x-ratelimit-remaining-requests": "many",
        "x-ratelimit-reset-requests": "1 fortnight",
    }, b"\xff\xfe not json", NOW)
    assert s.retry_after_s is None and s.requests == Reported()
    assert parse_response(429, {"retry-after": "-3"}, None, NOW).retry_after_s == 0.0
    assert parse_response(429, {"retry-after": "1e12"}, None, NOW).retry_after_s == 1e10
    assert parse_response(429, {"retry-after": "1e400"}, None, NOW).retry_after_s is None
    assert parse_response(429, {"retry-after": "99999999"}, None, NOW).retry_after_s == 99999999.0
    past = "Wed, 21 Oct 1970 07:28:00 GMT"
    assert parse_response(429, {"retry-after": past}, None, NOW).retry_after_s == 0.0
    far = "Fri, 31 Dec 9999 23:59:59 GMT"
    assert parse_response(429, {"retry-after": far}, None, NOW).retry_after_s > 1e8


def test_durations():
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("120ms") == 0.12
    assert parse_duration("") is None and parse_duration("5") is None
    assert parse_duration("1s garbage") is None


@given(st.integers(100, 599),
       st.one_of(st.none(), st.dictionaries(st.text(max_size=40), st.text(max_size=40)),
                 st.dictionaries(st.sampled_from(sorted(ANTHROPIC_429) + sorted(OPENAI_OK)
                                                 + ["retry-after", "retry-after-ms"]),
                                 st.text(max_size=30))),
       st.one_of(st.none(), st.text(max_size=80), st.binary(max_size=80)))
def test_garbage_never_raises(status, headers, body):
    s = parse_response(status, headers, body, NOW)
    assert s.retry_after_s is None or 0 <= s.retry_after_s <= 1e10
