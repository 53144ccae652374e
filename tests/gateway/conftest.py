"""The gateway under test: a daemon (its real app, on a loopback port) whose providers
``openai`` and ``anthropic`` (and ``local``, an OpenAI-compatible one of the config's own)
go to the package's fake provider, also on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from cross_instance.config import Config, ProviderLimits
from cross_instance.core.upstreams import GatewaySettings, Upstream
from cross_instance.stores.sqlite.store import SqliteStore
from cross_instance.testing.fakeprovider import FakeProvider
from tests.daemon.served_app import Running, served_app

KEY = "sk-gateway-test-0123456789abcdef"


def gateway_config(fake: FakeProvider, rpm: int = 6000, burst: int = 100,
                   **gateway: Any) -> Config:
    """Providers openai, anthropic and local at ``fake``, each ``rpm`` with ``burst``."""
    limits = ProviderLimits(rpm, burst)
    return replace(
        Config(),
        providers=MappingProxyType({"openai": limits, "anthropic": limits, "local": limits}),
        upstreams=MappingProxyType({
            "openai": Upstream("openai", fake.url + "/v1"),
            "anthropic": Upstream("anthropic", fake.url),
            "local": Upstream("openai", fake.url + "/v1")}),
        gateway=GatewaySettings(**gateway))


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(requests_per_minute=60_000, burst=1000) as provider:
        yield provider


GatewayFactory = Callable[..., Any]


@pytest.fixture
def gateway(tmp_path: Path, fake: FakeProvider) -> Iterator[GatewayFactory]:
    """``with gateway(**config_options) as run:`` a daemon serving the gateway."""

    @contextmanager
    def start(config: Config | None = None, **options: Any) -> Iterator[Running]:
        store = SqliteStore(tmp_path / "state")
        with served_app(store, config or gateway_config(fake, **options)) as run:
            yield run

    yield start
