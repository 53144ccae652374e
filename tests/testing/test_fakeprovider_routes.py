"""The fake provider's wider API surface, driven by the real ``openai`` and ``anthropic`` SDKs on
loopback: Responses, embeddings, models, token counting, both streaming helpers, the API keys it
saw, the per-request latency header, and its lean request-head reader."""

from __future__ import annotations

import base64
import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from cross_instance.testing.fakeprovider import FakeProvider
from cross_instance.testing.fakeprovider.responses import REPLY_TEXT
from cross_instance.testing.fakeprovider.stats import MAX_KEYS, StatsRecorder

N_PIECES = len(REPLY_TEXT.split(" "))
MSGS: list[Any] = [{"role": "user", "content": "hello"}]


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeProvider]:
    kwargs = {"requests_per_minute": 60_000, "burst": 1000, **getattr(request, "param", {})}
    with FakeProvider(**kwargs) as provider:
        yield provider


def oai(fake: FakeProvider, key: str = "sk-openai-test") -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=fake.base_url_openai, max_retries=0, timeout=10)


def ant(fake: FakeProvider, key: str = "sk-ant-test") -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=fake.base_url_anthropic, max_retries=0,
                               timeout=10)


# -- OpenAI Responses API ------------------------------------------------------------------


def test_responses_create(fake: FakeProvider) -> None:
    raw = oai(fake).responses.with_raw_response.create(model="gpt-fake", input="hello there")
    assert raw.headers["x-ratelimit-limit-requests"] == "60000"
    r = raw.parse()
    assert raw.headers["x-request-id"] == r.id and r.id.startswith("resp_")
    assert (r.object, r.status, r.model, r.output_text) == ("response", "completed", "gpt-fake",
                                                           REPLY_TEXT)
    msg = r.output[0]
    assert msg.type == "message" and msg.role == "assistant" and msg.status == "completed"
    assert msg.content[0].type == "output_text" and msg.content[0].annotations == []
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (3, 14, 17)
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0


def test_responses_list_input_instructions_and_max_output_tokens(fake: FakeProvider) -> None:
    r = oai(fake).responses.create(
        model="gpt-fake", instructions="abcd", max_output_tokens=3,
        input=[{"role": "user", "content": "x" * 8},
               {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "yyyy"}]}])
    assert r.output_text == "Hello! This is " and r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens) == (4, 3)  # 16 chars / 4
    assert r.status == "completed" and r.incomplete_details is None


EXPECTED_EVENTS = (["response.created", "response.in_progress", "response.output_item.added",
                    "response.content_part.added"] + ["response.output_text.delta"] * N_PIECES
                   + ["response.output_text.done", "response.content_part.done",
                      "response.output_item.done", "response.completed"])


def test_responses_stream_events(fake: FakeProvider) -> None:
    events = list(oai(fake).responses.create(model="gpt-fake", input="hi", stream=True))
    assert [e.type for e in events] == EXPECTED_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    last = events[-1]
    assert last.type == "response.completed" and deltas == REPLY_TEXT
    assert last.response.output_text == REPLY_TEXT and last.response.usage is not None
    assert last.response.usage.total_tokens == 1 + N_PIECES
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1


def test_responses_stream_helper(fake: FakeProvider) -> None:
    with oai(fake).responses.stream(model="gpt-fake", input="hello") as stream:
        snapshots = [e.snapshot for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert snapshots[-1] == REPLY_TEXT and final.output_text == REPLY_TEXT
    assert final.usage is not None and final.usage.output_tokens == N_PIECES
    with oai(fake).responses.stream(model="m", input="hi", max_output_tokens=2) as stream:
        final = stream.get_final_response()  # a cut reply completes too
    assert final.output_text == "Hello! This " and final.usage is not None
    assert final.usage.output_tokens == 2


def test_responses_raw_sse_frames(fake: FakeProvider) -> None:
    body = {"model": "m", "input": "hi", "stream": True, "max_output_tokens": 2}
    with httpx.stream("POST", fake.base_url_openai + "/responses", json=body) as r:
        text = r.read().decode()
    frames = [f for f in text.split("\n\n") if f]
    for frame in frames:
        event, data = frame.split("\n")
        assert event == "event: " + json.loads(data.removeprefix("data: "))["type"]
    assert frames[-1].startswith("event: response.completed\n")
    assert len(frames) == len(EXPECTED_EVENTS) - N_PIECES + 2


@pytest.mark.parametrize("fake", [{"requests_per_minute": 1, "burst": 1,
                                   "tokens_per_minute": 1000}], indirect=True)
def test_responses_are_rate_limited_by_requests_and_tokens(fake: FakeProvider) -> None:
    client = oai(fake)
    raw = client.responses.with_raw_response.create(model="m", input="x" * 40,
                                                    max_output_tokens=50)
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(1000 - 10 - 50)
    with pytest.raises(openai.RateLimitError) as err:
        client.responses.create(model="m", input="hi")
    assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(err.value.response.headers["retry-after-ms"]) > 0
    assert fake.stats()["by_route"]["/v1/responses"] == 2


def test_responses_bad_requests(fake: FakeProvider) -> None:
    client = oai(fake)
    with pytest.raises(openai.BadRequestError, match="input"):
        client.responses.create(model="m")
    with pytest.raises(openai.BadRequestError, match="max_output_tokens"):
        client.responses.create(model="m", input="hi", max_output_tokens=0)
    assert fake.stats()["bad_request"] == 2


# -- embeddings ----------------------------------------------------------------------------


def test_embeddings(fake: FakeProvider) -> None:
    client = oai(fake)
    one = client.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert one.object == "list" and one.model == "text-embedding-3-small"
    assert [(d.object, d.index) for d in one.data] == [("embedding", 0)]
    vec = one.data[0].embedding
    assert len(vec) == 8 and abs(sum(v * v for v in vec) - 1) < 1e-5
    assert (one.usage.prompt_tokens, one.usage.total_tokens) == (3, 3)
    many = client.embeddings.create(model="m", input=["a", "hello world", "a"])
    assert [d.index for d in many.data] == [0, 1, 2] and many.usage.prompt_tokens == 5
    assert many.data[1].embedding == vec == many.data[1].embedding  # deterministic per input
    assert many.data[0].embedding == many.data[2].embedding != vec
    tokens = client.embeddings.create(model="m", input=[[1, 2, 3], [4]], dimensions=20)
    assert [len(d.embedding) for d in tokens.data] == [20, 20] and tokens.usage.prompt_tokens == 4
    assert client.embeddings.create(model="m", input=[5, 6]).usage.prompt_tokens == 2


def test_embeddings_base64_matches_floats(fake: FakeProvider) -> None:
    body = {"model": "m", "input": "same", "encoding_format": "base64"}
    encoded = httpx.post(fake.base_url_openai + "/embeddings", json=body).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    floats = oai(fake).embeddings.create(model="m", input="same").data[0].embedding
    assert list(struct.unpack("<8f", raw)) == floats


@pytest.mark.parametrize("fake", [{"requests_per_minute": 1, "burst": 2,
                                   "tokens_per_minute": 100}], indirect=True)
def test_embeddings_are_rate_limited_and_checked(fake: FakeProvider) -> None:
    client = oai(fake)
    raw = client.embeddings.with_raw_response.create(model="m", input="x" * 40)
    assert raw.headers["x-ratelimit-remaining-tokens"] == "90"  # cost = input tokens only
    for bad in ("", [], ["a", [1]], [[]], {"a": 1}):
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="m", input=bad)  # type: ignore[arg-type]
    client.embeddings.create(model="m", input="y")
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="m", input="z")
    assert (fake.stats()["ok"], fake.stats()["rate_limited"], fake.stats()["bad_request"]) == (
        2, 1, 5)


# -- models and token counting (not rate limited) --------------------------------------------


@pytest.mark.parametrize("fake", [{"burst": 1, "requests_per_minute": 1}], indirect=True)
def test_models_and_count_tokens_are_not_rate_limited(fake: FakeProvider) -> None:
    client, aclient = oai(fake), ant(fake)
    client.chat.completions.create(model="m", messages=MSGS)  # the only request it admits
    for _ in range(3):
        assert [m.id for m in client.models.list()] == ["gpt-fake", "gpt-4o-mini",
                                                        "text-embedding-3-small"]
        model = client.models.retrieve("gpt-4o-mini")
        assert (model.id, model.object, model.owned_by) == ("gpt-4o-mini", "model",
                                                            "fake-provider")
        assert model.created == 1_700_000_000
        counted = aclient.messages.count_tokens(model="claude-fake", system="abcd",
                                                messages=[{"role": "user", "content": "x" * 9}])
        assert counted.input_tokens == 4
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.code == "model_not_found"
    stats = fake.stats()
    assert (stats["requests"], stats["ok"]) == (1, 1)
    assert stats["by_route"] == {"/v1/chat/completions": 1, "/v1/models": 3,
                                 "/v1/models/{id}": 4, "/v1/messages/count_tokens": 3}


def test_anthropic_models_shape(fake: FakeProvider) -> None:
    client = ant(fake)
    assert [m.id for m in client.models.list()] == ["claude-fake", "claude-3-5-haiku-latest"]
    info = client.models.retrieve("claude-fake")
    assert (info.type, info.display_name, info.created_at.year) == ("model", "Claude Fake", 2023)
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("gpt-fake")


def test_count_tokens_matches_the_messages_usage(fake: FakeProvider) -> None:
    client = ant(fake)
    msgs: list[Any] = [{"role": "user", "content": [{"type": "text", "text": "y" * 30}]}]
    counted = client.messages.count_tokens(model="claude-fake", messages=msgs)
    reply = client.messages.create(model="claude-fake", max_tokens=5, messages=msgs)
    assert counted.input_tokens == reply.usage.input_tokens == 8
    r = httpx.post(fake.url + "/v1/messages/count_tokens", json={"model": "m"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


# -- the streaming helpers of both SDKs ----------------------------------------------------


def test_anthropic_messages_and_stream_helper(fake: FakeProvider) -> None:
    client = ant(fake)
    reply = client.messages.create(model="claude-fake", max_tokens=100, messages=MSGS)
    assert reply.content[0].type == "text" and reply.content[0].text == REPLY_TEXT
    with client.messages.stream(model="claude-fake", max_tokens=4, messages=MSGS) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_message()
    for needed in ("message_start", "content_block_start", "content_block_delta",
                   "content_block_stop", "message_delta", "message_stop"):
        assert needed in types
    assert final.content[0].type == "text" and final.content[0].text == "Hello! This is a "
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == (
        "max_tokens", 2, 4)


def test_openai_chat_stream_ends_with_usage(fake: FakeProvider) -> None:
    chunks = list(oai(fake).chat.completions.create(
        model="gpt-fake", messages=MSGS, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY_TEXT
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 2 + N_PIECES


# -- API keys seen ---------------------------------------------------------------------------


def test_api_keys_are_recorded_in_first_seen_order_and_reset(fake: FakeProvider) -> None:
    oai(fake, "sk-one").models.list()
    ant(fake, "sk-two").messages.create(model="m", max_tokens=1, messages=MSGS)
    oai(fake, "sk-one").embeddings.create(model="m", input="a")
    httpx.post(fake.base_url_openai + "/nope", headers={"authorization": "Bearer sk-three"})
    httpx.get(fake.url + "/health", headers={"authorization": "Bearer sk-control"})
    assert fake.stats()["apiKeys"] == ["sk-one", "sk-two", "sk-three"]
    assert httpx.get(fake.url + "/stats").json()["apiKeys"] == ["sk-one", "sk-two", "sk-three"]
    fake.reset_stats()
    assert fake.stats()["apiKeys"] == []


def test_key_record_is_capped() -> None:
    rec = StatsRecorder(origin_ns=0)
    for i in range(MAX_KEYS + 20):
        rec.note_key(f"k{i % (MAX_KEYS + 10)}")
    keys = rec.snapshot()["apiKeys"]
    assert keys == [f"k{i}" for i in range(MAX_KEYS)]


# -- x-fake-latency-ms -----------------------------------------------------------------------


def timed_post(fake: FakeProvider, headers: dict[str, str]) -> tuple[int, float]:
    start = time.monotonic()
    r = httpx.post(fake.base_url_openai + "/chat/completions", headers=headers,
                   json={"model": "m", "messages": MSGS}, timeout=10)
    return r.status_code, time.monotonic() - start


@pytest.mark.parametrize("fake", [{"latency_s": 2.0}], indirect=True)
def test_latency_header_overrides_the_configured_latency(fake: FakeProvider) -> None:
    assert timed_post(fake, {"x-fake-latency-ms": "0"})[1] < 1.0
    status, took = timed_post(fake, {"x-fake-latency-ms": "150"})
    assert status == 200 and 0.15 <= took < 1.0


def test_bad_latency_header_is_a_400(fake: FakeProvider) -> None:
    for bad in ("-1", "fast", "1.5", "3600001"):
        r = httpx.post(fake.base_url_openai + "/responses", headers={"x-fake-latency-ms": bad},
                       json={"model": "m", "input": "hi"})
        assert r.status_code == 400 and "x-fake-latency-ms" in r.json()["error"]["message"]
    r = httpx.post(fake.url + "/v1/messages", headers={"x-fake-latency-ms": "x"},
                   json={"model": "m", "max_tokens": 1, "messages": MSGS})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert fake.stats()["bad_request"] == 5 and fake.stats()["ok"] == 0


def test_a_slow_stream_can_be_cut_mid_way(fake: FakeProvider) -> None:
    client = oai(fake)
    stream = client.with_options(timeout=10).responses.create(
        model="m", input="hi", stream=True, extra_headers={"x-fake-latency-ms": "3000"})
    start = time.monotonic()
    first = next(iter(stream))
    assert first.type == "response.created" and time.monotonic() - start < 1.5
    stream.close()  # the client goes away mid-stream
    start = time.monotonic()
    assert client.responses.create(model="m", input="hi").output_text == REPLY_TEXT
    assert time.monotonic() - start < 1.0  # other requests keep their own (zero) latency


# -- the lean request-head reader ------------------------------------------------------------


def raw_exchange(fake: FakeProvider, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_request_head_edge_cases(fake: FakeProvider) -> None:
    body = json.dumps({"model": "m", "messages": MSGS}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Client-Id: first\r\n"
            b"x-client-id: second\r\nContent-Length: %d\r\n\r\n" % len(body))
    two = raw_exchange(fake, head + body + head + body)  # keep-alive: both answered
    assert two.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert fake.stats()["by_client"]["first"]["ok"] == 2  # first of repeated headers wins
    folded = (b"POST /v1/chat/completions HTTP/1.0\r\nX-Client-Id: folded\r\n  name\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body)) + body
    assert raw_exchange(fake, folded).startswith(b"HTTP/1.1 200 OK\r\n")
    assert fake.stats()["by_client"]["folded name"]["ok"] == 1
    many = b"GET /health HTTP/1.1\r\n" + b"".join(b"h%d: v\r\n" % i for i in range(101))
    assert raw_exchange(fake, many + b"\r\n").startswith(b"HTTP/1.1 431 ")
    long = b"GET /health HTTP/1.1\r\nh: " + b"v" * 70_000 + b"\r\n\r\n"
    assert raw_exchange(fake, long).startswith(b"HTTP/1.1 431 ")
    assert raw_exchange(fake, b"GET /health\r\n").startswith(b'{"ok": true}')  # HTTP/0.9
    odd = raw_exchange(fake, b"BREW /pot HTTP/1.1 extra\r\n\r\n")  # the standard parser's 400
    assert b"Error code: 400" in odd


def test_http10_without_keep_alive_is_closed(fake: FakeProvider) -> None:
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):  # the server closes: recv ends
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b'{"ok": true}')


def test_handler_headers_property_still_works(fake: FakeProvider,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from cross_instance.testing.fakeprovider.handler import ProviderHandler

    seen: list[str | None] = []
    original = ProviderHandler.do_GET

    def spy(self: ProviderHandler) -> None:
        seen.append(self.headers.get("X-Probe"))
        original(self)

    monkeypatch.setattr(ProviderHandler, "do_GET", spy)
    assert httpx.get(fake.url + "/health", headers={"x-probe": "yes"}).status_code == 200
    assert seen == ["yes"]
