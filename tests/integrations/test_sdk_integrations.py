"""The official SDKs made coordinated in one line (an httpx transport), against the fake
provider on loopback: permits taken, responses reported, streams hold their permit."""

from __future__ import annotations

import asyncio
import dataclasses
from types import MappingProxyType

import anthropic
import httpx
import openai
import pytest

from cross_instance.core.limits import ProviderLimits
from cross_instance.integrations.httpx_transport import (
    CoordinatedTransport,
    coordinated_client,
)
from cross_instance.runtime import Runtime
from cross_instance.testing.fakeprovider import FakeProvider
from tests.helpers_runtime import make_config

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def rt(tmp_path):
    cfg = dataclasses.replace(make_config(tmp_path / "state"), providers=MappingProxyType({
        "openai": ProviderLimits(600, 10), "anthropic": ProviderLimits(600, 10)}))
    with Runtime.start(cwd=tmp_path, config=cfg) as runtime:
        yield runtime


def usage(rt, key):
    return {b.key: b for b in rt.store.snapshot().buckets}[key].used_last_minute


def test_openai_client_takes_a_permit_per_request(rt):
    with FakeProvider(requests_per_minute=600, burst=20) as fake:
        client = openai.OpenAI(base_url=fake.base_url_openai, api_key="test", max_retries=0,
                               http_client=httpx.Client(
                                   transport=CoordinatedTransport(rt, "openai")))
        for _ in range(3):
            reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert reply.choices[0].message.content
        assert usage(rt, "r:openai") == 3
        assert rt.status()["activeRequests"] == 0
        assert fake.stats()["rate_limited"] == 0


def test_a_stream_holds_its_permit_until_it_ends(rt):
    with FakeProvider(requests_per_minute=600, burst=20, latency_s=0.2) as fake:
        client = openai.OpenAI(base_url=fake.base_url_openai, api_key="test", max_retries=0,
                               http_client=httpx.Client(
                                   transport=CoordinatedTransport(rt, "openai")))
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        chunks = iter(stream)
        next(chunks)
        assert rt.status()["activeRequests"] == 1
        rest = list(chunks)
        assert rest and rt.status()["activeRequests"] == 0


def test_stated_limits_pace_the_next_calls(rt):
    """The first answer states 60/min with burst 1: the runtime learns it and waits instead
    of sending the second call into a 429."""
    with FakeProvider(requests_per_minute=60, burst=1, header_style="openai") as fake:
        client = coordinated_client(openai.OpenAI, rt, "openai", base_url=fake.base_url_openai,
                                    api_key="test", max_retries=0)
        for _ in range(2):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert fake.stats()["rate_limited"] == 0
        assert {b.key: b for b in rt.store.snapshot().buckets}["r:openai"].reported_limit == 60


def test_a_429_without_headers_reaches_the_shared_state(rt):
    with FakeProvider(requests_per_minute=60, burst=1, header_style="none") as fake:
        client = coordinated_client(openai.OpenAI, rt, "openai", base_url=fake.base_url_openai,
                                    api_key="test", max_retries=0)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        bucket = {b.key: b for b in rt.store.snapshot().buckets}["r:openai"]
        assert bucket.learned_rate == 540.0  # AIMD: one decrease
        assert bucket.cooldown_until_ns > rt.store.now_ns()  # Retry-After, shared
        assert rt.try_permit("openai") is None  # nobody sends into the known cooldown


def test_async_anthropic_client(rt):
    async def main():
        with FakeProvider(requests_per_minute=600, burst=20, header_style="anthropic") as fake:
            client = coordinated_client(anthropic.AsyncAnthropic, rt, "anthropic",
                                        base_url=fake.base_url_anthropic, api_key="test",
                                        max_retries=0)
            replies = await asyncio.gather(*[
                client.messages.create(model="claude-sonnet", max_tokens=16, messages=MESSAGES)
                for _ in range(4)])
            assert all(r.content[0].text for r in replies)
            await client.close()

    asyncio.run(main())
    assert usage(rt, "r:anthropic") == 4
    assert rt.status()["activeRequests"] == 0


@pytest.fixture
def token_rt(tmp_path):
    limits = ProviderLimits(600, 10, tokens_per_minute=60, token_burst=10_000)  # 1 token/s
    cfg = dataclasses.replace(make_config(tmp_path / "state"), providers=MappingProxyType({
        "openai": limits, "anthropic": limits}))
    with Runtime.start(cwd=tmp_path, config=cfg) as runtime:
        yield runtime


def tokens_left(rt, provider):
    return rt.status()["providers"][provider]["tokensAvailable"]


def test_openai_client_reserves_the_estimate_and_settles_with_the_usage(token_rt):
    rt = token_rt
    with FakeProvider(requests_per_minute=600, burst=20, latency_s=0.2) as fake:
        client = coordinated_client(openai.OpenAI, rt, "openai", base_url=fake.base_url_openai,
                                    api_key="test", max_retries=0)
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                               max_tokens=1000)
        used = reply.usage.total_tokens
        assert 0 < used < 100
        assert 10_000 - used - 1 <= tokens_left(rt, "openai") <= 10_000 - used + 2
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                                max_tokens=2000, stream=True,
                                                stream_options={"include_usage": True})
        chunks = iter(stream)
        next(chunks)  # held: the whole estimate (prompt / 4 + max_tokens) is reserved
        assert tokens_left(rt, "openai") <= 10_000 - used - 2000 + 2
        final = [c for c in chunks if c.usage is not None][-1]
        left = 10_000 - used - final.usage.total_tokens
        assert left - 1 <= tokens_left(rt, "openai") <= left + 3


def test_anthropic_stream_settles_and_a_429_refunds(token_rt):
    rt = token_rt

    async def main():
        with FakeProvider(requests_per_minute=60, burst=1, header_style="none") as fake:
            client = coordinated_client(anthropic.AsyncAnthropic, rt, "anthropic",
                                        base_url=fake.base_url_anthropic, api_key="test",
                                        max_retries=0)
            async with client.messages.stream(model="claude-sonnet", max_tokens=500,
                                              messages=MESSAGES) as stream:
                message = await stream.get_final_message()
            used = message.usage.input_tokens + message.usage.output_tokens
            assert 10_000 - used - 1 <= tokens_left(rt, "anthropic") <= 10_000 - used + 2
            with pytest.raises(anthropic.RateLimitError):  # the fake allows 1 per minute
                await client.messages.create(model="claude-sonnet", max_tokens=3000,
                                             messages=MESSAGES)
            assert tokens_left(rt, "anthropic") >= 10_000 - used - 1  # refused: refunded
            await client.close()

    asyncio.run(main())
