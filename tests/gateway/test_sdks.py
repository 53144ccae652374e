"""The official SDKs pointed at the gateway work unchanged (issue 17): ``openai`` (chat
completions, streaming included, responses, embeddings, models) and ``anthropic`` (messages,
streaming, token counts), and the key they send reaches the provider."""

from __future__ import annotations

import anthropic
import openai

from cross_instance.testing.fakeprovider import FakeProvider
from tests.gateway.conftest import KEY, GatewayFactory

MESSAGES = [{"role": "user", "content": "Say hello"}]


def test_openai_sdk_through_the_gateway(gateway: GatewayFactory, fake: FakeProvider) -> None:
    with gateway() as run:
        client = openai.OpenAI(base_url=f"{run.base}/openai/v1", api_key=KEY, max_retries=0)
        done = client.chat.completions.create(model="gpt-4o", messages=MESSAGES,  # type: ignore[arg-type]
                                              max_tokens=6)
        assert done.choices[0].message.content
        assert done.usage is not None and done.usage.completion_tokens > 0
        chunks = list(client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=6, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text and chunks[-1].usage is not None
        assert client.responses.create(model="gpt-4o", input="hi", max_output_tokens=6
                                       ).output_text
        with client.responses.stream(model="gpt-4o", input="hi", max_output_tokens=6) as s:
            assert s.get_final_response().usage is not None
        vectors = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert len(vectors.data) == 2
        assert [m.id for m in client.models.list()]
        assert fake.stats()["apiKeys"] == [KEY]
        snap = run.daemon.store.snapshot()
        assert not snap.permits  # each released as its answer ended


def test_anthropic_sdk_through_the_gateway(gateway: GatewayFactory, fake: FakeProvider) -> None:
    with gateway() as run:
        client = anthropic.Anthropic(base_url=f"{run.base}/anthropic", api_key=KEY,
                                     max_retries=0)
        reply = client.messages.create(model="claude-sonnet-4", max_tokens=6,
                                       messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.content and reply.usage.output_tokens > 0
        with client.messages.stream(model="claude-sonnet-4", max_tokens=6,
                                    messages=MESSAGES) as stream:  # type: ignore[arg-type]
            assert "".join(stream.text_stream)
            assert stream.get_final_message().usage.output_tokens > 0
        counted = client.messages.count_tokens(model="claude-sonnet-4",
                                               messages=MESSAGES)  # type: ignore[arg-type]
        assert counted.input_tokens > 0
        assert fake.stats()["apiKeys"] == [KEY]


def test_async_sdk_and_a_provider_of_the_config(gateway: GatewayFactory) -> None:
    """An OpenAI-compatible provider the config names (``local``), with the async client."""
    import asyncio

    async def calls(base: str) -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{base}/local/v1", api_key=KEY, max_retries=0)
        replies = await asyncio.gather(*(client.chat.completions.create(
            model="llama-3", messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
            for _ in range(8)))
        await client.close()
        return [r.choices[0].message.content or "" for r in replies]

    with gateway() as run:
        assert all(asyncio.run(calls(run.base)))
        status = run.daemon.store.snapshot()
        assert not status.permits
