"""The retry helper: a 429 is reported and the next attempt waits on the shared cooldown."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import MappingProxyType

import openai
import pytest

from cross_instance.core.limits import ProviderLimits
from cross_instance.integrations import retry
from cross_instance.runtime import Runtime
from cross_instance.testing.fakeprovider import FakeProvider
from tests.helpers_runtime import make_config

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def rt(tmp_path):
    cfg = dataclasses.replace(make_config(tmp_path / "state"),
                              providers=MappingProxyType({"openai": ProviderLimits(600, 10)}))
    with Runtime.start(cwd=tmp_path, config=cfg) as runtime:
        yield runtime


def test_sync_retry_waits_on_the_shared_cooldown(rt):
    with FakeProvider(requests_per_minute=60, burst=1, header_style="none") as fake:
        client = openai.OpenAI(base_url=fake.base_url_openai, api_key="t", max_retries=0)
        started = time.monotonic()
        for _ in range(2):
            reply = retry.call(rt, "openai", lambda: client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES))
            assert reply.choices[0].message.content
        # the 429's Retry-After (1 s) was waited out through the permit, not a local sleep
        assert time.monotonic() - started >= 0.9
        assert fake.stats()["rate_limited"] == 1


def test_async_retry_and_give_up_after_attempts(rt):
    async def main():
        with FakeProvider(requests_per_minute=60, burst=1, header_style="none") as fake:
            client = openai.AsyncOpenAI(base_url=fake.base_url_openai, api_key="t",
                                        max_retries=0)

            async def create():
                return await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

            assert (await retry.acall(rt, "openai", create)).choices
            with pytest.raises(openai.RateLimitError):
                await retry.acall(rt, "openai", create, attempts=1)
            await client.close()

    asyncio.run(main())


def test_only_provider_429s_are_retried():
    assert not retry.is_rate_limited(ValueError("no"))
    assert not retry.is_rate_limited(ConnectionError("reset"))
