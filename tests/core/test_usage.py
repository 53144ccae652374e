"""Token estimates of requests and usage read from responses, on the shapes the providers
send (captured from their documentation's examples) and on garbage."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from cross_instance.core.usage import estimate_parts, estimate_tokens, usage_from_body

OPENAI_JSON = {
    "id": "chatcmpl-abc", "object": "chat.completion", "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
              "prompt_tokens_details": {"cached_tokens": 0}},
}
ANTHROPIC_JSON = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
    "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
    "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 100,
              "cache_read_input_tokens": 0},
}
GEMINI_JSON = {"candidates": [], "usageMetadata": {"promptTokenCount": 4,
                                                   "candidatesTokenCount": 7,
                                                   "totalTokenCount": 11}}


def sse(*events: object, named: bool = False) -> bytes:
    out = []
    for e in events:
        if named and isinstance(e, dict):
            out.append(f"event: {e['type']}")
        out.append("data: " + (e if isinstance(e, str) else json.dumps(e)))
        out.append("")
    return "\n".join(out).encode()


def test_json_bodies_of_each_provider():
    assert usage_from_body(json.dumps(OPENAI_JSON).encode(), "application/json") == 29
    assert usage_from_body(json.dumps(ANTHROPIC_JSON).encode(),
                           "application/json; charset=utf-8") == 2095 + 503 + 100
    assert usage_from_body(json.dumps(GEMINI_JSON).encode(), "application/json") == 11
    no_total = {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    assert usage_from_body(json.dumps(no_total).encode(), "application/json") == 7


def test_openai_stream_with_a_final_usage_chunk():
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": "Hi"}}], "usage": None}
    final = {"id": "c", "object": "chat.completion.chunk", "choices": [],
             "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}}
    body = sse(chunk, chunk, final, "[DONE]")
    assert usage_from_body(body, "text/event-stream; charset=utf-8") == 10
    assert usage_from_body(sse(chunk, "[DONE]"), "text/event-stream") is None


def test_anthropic_stream_counts_are_cumulative_not_added():
    body = sse(
        {"type": "message_start", "message": {"id": "m", "usage": {
            "input_tokens": 25, "output_tokens": 1}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                               "text": "Hi"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 15}},
        {"type": "message_stop"}, named=True)
    assert usage_from_body(body, "text/event-stream") == 25 + 15


def test_estimates_from_request_bodies():
    body = {"model": "m", "max_tokens": 100,
            "messages": [{"role": "user", "content": "x" * 40}]}
    assert estimate_tokens(body) == 10 + 100
    parts = {"model": "m", "system": "y" * 8, "max_completion_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "z" * 9}]}]}
    assert estimate_tokens(parts) == 2 + 3 + 5
    assert estimate_tokens({"model": "m", "messages": []}) == 0
    assert estimate_tokens({"input": "embeddings are not completions"}) is None
    assert estimate_tokens(None) is None
    assert estimate_tokens({"messages": [], "max_tokens": True}) == 0


@given(st.binary(max_size=300), st.sampled_from(["application/json", "text/event-stream", ""]))
def test_garbage_never_raises(body, content_type):
    result = usage_from_body(body, content_type)
    assert result is None or result >= 0


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["usage", "total_tokens", "input_tokens",
                                                       "messages", "content", "max_tokens"]),
                                      inner, max_size=4), max_leaves=12))
def test_odd_json_never_raises(value):
    text = json.dumps(value).encode()
    result = usage_from_body(text, "application/json")
    assert result is None or result >= 0
    estimate = estimate_tokens(value)
    assert estimate is None or estimate >= 0


def test_estimate_parts_of_each_request_shape() -> None:
    chat = {"messages": [{"role": "user", "content": "x" * 10}], "system": "yy",
            "max_completion_tokens": 7}
    assert estimate_parts(chat) == (3, 7)
    assert estimate_parts({"input": "abcdefgh", "instructions": "abcd",
                           "max_output_tokens": 5}) == (3, 5)  # Responses API
    assert estimate_parts({"input": [[1, 2, 3], [4]]}) == (4, 0)  # token arrays
    assert estimate_parts({"input": ["ab", "cd"]}) == (1, 0)  # embeddings texts
    assert estimate_parts({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "abcd"}]}]}) == (1, 0)
    assert estimate_parts({"model": "m"}) is None
    assert estimate_parts("nope") is None
