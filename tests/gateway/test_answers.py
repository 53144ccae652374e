"""The gateway's own answers, shaped as the provider's (issue 17): a bounded wait ends in the
provider's 429 with ``Retry-After``; an unconfigured provider, a path out of the base URL, a
bad instance id or a body over the bound are refused; an unreachable or silent upstream is
a 502 or 504; with a token, gateway routes want ``X-Pi-Token`` and pass ``Authorization``
on to the provider."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import anthropic
import httpx
import openai
import pytest

from cross_instance.core.upstreams import Upstream
from cross_instance.stores.sqlite.store import SqliteStore
from cross_instance.testing.fakeprovider import FakeProvider
from tests.daemon.served_app import served_app
from tests.gateway.conftest import KEY, GatewayFactory, gateway_config

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_a_wait_past_the_bound_is_the_providers_429(gateway: GatewayFactory) -> None:
    with gateway(rpm=1, burst=1, max_wait_ms=200) as run:
        client = openai.OpenAI(base_url=f"{run.base}/openai/v1", api_key=KEY, max_retries=0)
        client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        reply = caught.value.response
        assert 50 <= int(reply.headers["retry-after"]) <= 60  # the next token, a minute away
        assert reply.json()["error"]["code"] == "rate_limit_exceeded"
        claude = anthropic.Anthropic(base_url=f"{run.base}/anthropic", api_key=KEY,
                                     max_retries=0)
        claude.messages.create(model="c", max_tokens=4, messages=CHAT["messages"])  # type: ignore[arg-type]
        with pytest.raises(anthropic.RateLimitError) as refused:
            claude.messages.create(model="c", max_tokens=4, messages=CHAT["messages"])  # type: ignore[arg-type]
        assert refused.value.response.json()["error"]["type"] == "rate_limit_error"
        # a client may ask to wait less than the bound, never more
        quick = httpx.post(f"{run.base}/openai/v1/chat/completions", json=CHAT,
                           headers={**AUTH, "X-Pi-Max-Wait-Ms": "0"})
        assert quick.status_code == 429 and "retry-after" in quick.headers


def test_refused_requests(gateway: GatewayFactory, fake: FakeProvider) -> None:
    with gateway() as run:
        base = run.base
        unknown = httpx.post(f"{base}/evil/v1/chat/completions", json=CHAT, headers=AUTH)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "provider_not_configured"
        assert "crossInstance.providers.evil.baseUrl" in unknown.json()["error"]["message"]
        for path in ("/openai/v1/../../stats", "/openai/v1/%2e%2e/stats",
                     "/openai/v1/models/%2E%2E/%2e%2e/x"):
            climbed = httpx.post(base + path, json=CHAT, headers=AUTH)
            assert climbed.status_code in (400, 404), path
        assert fake.stats()["requests"] == 0  # none of them left the gateway
        bad_id = httpx.post(f"{base}/openai/v1/chat/completions", json=CHAT,
                            headers={**AUTH, "X-Pi-Instance-Id": "no\tid"})
        assert bad_id.status_code == 400 and "X-Pi-Instance-Id" in bad_id.text
        # the daemon's own routes are still there
        assert httpx.get(f"{base}/v1/health").json()["ok"] is True


def test_bodies_are_bounded(gateway: GatewayFactory, fake: FakeProvider) -> None:
    with gateway(max_body_bytes=4096) as run:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
        refused = httpx.post(f"{run.base}/openai/v1/chat/completions", json=big, headers=AUTH)
        assert refused.status_code == 413

        def chunks():  # no Content-Length: cut off as it passes the bound
            yield b'{"model": "m", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}]}'

        chunked = httpx.post(f"{run.base}/openai/v1/chat/completions", content=chunks(),
                             headers={**AUTH, "Content-Type": "application/json"})
        assert chunked.status_code == 413
        assert fake.stats()["requests"] == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_or_silent_upstream(tmp_path: Path, fake: FakeProvider) -> None:
    cfg = gateway_config(fake, upstream_timeout_ms=1000)
    cfg = replace(cfg, upstreams=MappingProxyType({
        **cfg.upstreams, "local": Upstream("openai", f"http://127.0.0.1:{_closed_port()}/v1")}))
    with served_app(SqliteStore(tmp_path / "state"), cfg) as run:
        gone = httpx.post(f"{run.base}/local/v1/chat/completions", json=CHAT, headers=AUTH)
        assert gone.status_code == 502 and gone.json()["error"]["code"] == "upstream_unreachable"
        slow = httpx.post(f"{run.base}/openai/v1/chat/completions", json=CHAT,
                          headers={**AUTH, "x-fake-latency-ms": "3000"}, timeout=10)
        assert slow.status_code == 504 and slow.json()["error"]["code"] == "upstream_timeout"
        assert not run.daemon.store.snapshot().permits


def test_with_a_token_gateway_routes_want_x_pi_token(tmp_path: Path, fake: FakeProvider
                                                     ) -> None:
    token = "gateway-token-0123456789"
    with served_app(SqliteStore(tmp_path / "state"), gateway_config(fake), token=token) as run:
        url = f"{run.base}/openai/v1/chat/completions"
        assert httpx.post(url, json=CHAT, headers=AUTH).status_code == 401
        assert httpx.post(url, json=CHAT, headers={**AUTH, "X-Pi-Token": "wrong"}
                          ).status_code == 401
        ok = httpx.post(url, json=CHAT, headers={**AUTH, "X-Pi-Token": token})
        assert ok.status_code == 200
        assert fake.stats()["apiKeys"] == [KEY]  # Authorization went on to the provider
        assert httpx.get(f"{run.base}/v1/status", headers={"Authorization": f"Bearer {token}"}
                         ).status_code == 200
