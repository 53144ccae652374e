"""Hostile input at the gateway (issue 17): absurd provider headers pass through to the
client unchanged but never block a provider for longer than ``maxCooldownMs``; odd model
names, bodies and wait headers are answered clearly, and none of it leaves a permit held."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType

import httpx
import pytest

from cross_instance.config import AdaptiveSettings
from cross_instance.core.upstreams import Upstream
from cross_instance.stores.sqlite.store import SqliteStore
from cross_instance.testing.fakeprovider import FakeProvider
from tests.daemon.served_app import served_app
from tests.gateway.conftest import KEY, GatewayFactory, gateway_config

AUTH = {"Authorization": f"Bearer {KEY}"}


class _Absurd(BaseHTTPRequestHandler):
    """A provider whose first answer is a 429 asking for a day's pause, then 200s."""

    protocol_version = "HTTP/1.1"
    calls = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).calls += 1
        first = type(self).calls == 1
        body = json.dumps({"error": {"message": "slow down"}} if first else
                          {"choices": [{"message": {"content": "ok"}}]}).encode()
        self.send_response(429 if first else 200)
        if first:
            self.send_header("retry-after", "86400")
            self.send_header("x-ratelimit-reset-requests", "999999h")
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _absurd_provider() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Absurd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_an_absurd_retry_after_passes_through_but_is_clamped(tmp_path: Path) -> None:
    with FakeProvider() as fake, _absurd_provider() as base:
        cfg = gateway_config(fake)
        cfg = replace(cfg, adaptive=AdaptiveSettings(max_cooldown_ms=1000),
                      upstreams=MappingProxyType({**cfg.upstream_table(),
                                                  "local": Upstream("openai", base)}))
        with served_app(SqliteStore(tmp_path / "state"), cfg) as run:
            url = f"{run.base}/local/v1/chat/completions"
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            first = httpx.post(url, json=body, headers=AUTH)
            assert first.status_code == 429
            assert first.headers["retry-after"] == "86400"  # the provider's, unchanged
            began = time.monotonic()
            second = httpx.post(url, json=body, headers=AUTH, timeout=30)
            assert second.status_code == 200
            assert time.monotonic() - began < 5  # a second's cooldown at most, not a day
            assert not run.daemon.store.snapshot().permits


@pytest.mark.parametrize(("model", "status", "ours"), [
    ("x" * 5000, 400, True),  # not a model name the limits could key on: the gateway says
    ("tab\there", 400, True),
    ("модель-🙂", 200, False),
    (12, 400, False),  # not a string: a provider-wide permit, and the provider judges it
    (None, 400, False),
])
def test_odd_models(gateway: GatewayFactory, fake: FakeProvider, model: object, status: int,
                    ours: bool) -> None:
    with gateway() as run:
        reply = httpx.post(f"{run.base}/openai/v1/chat/completions", headers=AUTH, json={
            "model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == status, reply.text
        assert ("pi-xi gateway" in reply.text) == ours
        assert fake.stats()["requests"] == (0 if ours else 1)
        assert not run.daemon.store.snapshot().permits


def test_odd_bodies_and_wait_headers(gateway: GatewayFactory, fake: FakeProvider) -> None:
    with gateway() as run:
        url = f"{run.base}/openai/v1/chat/completions"
        garbage = httpx.post(url, content=b"\xff\xfe{not json", headers={
            **AUTH, "Content-Type": "application/json"})
        assert garbage.status_code == 400  # the provider's own answer, passed on
        for value, ok in (("abc", False), ("-5", True), ("nan", True), ("1e309", True)):
            reply = httpx.post(url, headers={**AUTH, "X-Pi-Max-Wait-Ms": value}, json={
                "model": "m", "messages": [{"role": "user", "content": "hi"}]})
            assert (reply.status_code == 200) == ok, (value, reply.text)
        # any method goes through (without a permit); the fake answers DELETE with 501
        assert httpx.delete(f"{run.base}/openai/v1/models/x", headers=AUTH).status_code == 501
        assert not run.daemon.store.snapshot().permits
