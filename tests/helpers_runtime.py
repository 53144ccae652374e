"""Building runtimes for tests: a config with fast heartbeats and a private state dir."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType

from cross_instance.config import Config
from cross_instance.core.limits import ProviderLimits


def make_config(state: Path, *, rpm: int = 6000, burst: int = 100, total: int = 6,
                interval_ms: int = 200, timeout_ms: int = 1000, store: str | None = None,
                **provider: int) -> Config:
    """``store``: a store URL (e.g. a Redis with a test prefix); default the SQLite in
    ``state``."""
    return dataclasses.replace(
        Config(), runtime_dir=state, store=store, total_max_llm=total,
        heartbeat_interval_ms=interval_ms,
        heartbeat_timeout_ms=timeout_ms,
        providers=MappingProxyType({"p": ProviderLimits(rpm, burst, **provider)}))
