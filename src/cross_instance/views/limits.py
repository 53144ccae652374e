"""The limits view (``pi-xi limits``): configured limits merged with the shared state."""

from __future__ import annotations

from typing import Any

from cross_instance.config import Config
from cross_instance.core.limits import ModelLimits, ProviderLimits


def _model_json(m: ModelLimits) -> dict[str, Any]:
    return {"requestsPerMinute": m.requests_per_minute, "burst": m.burst,
            "tokensPerMinute": m.tokens_per_minute, "tokenBurst": m.token_burst,
            "maxConcurrency": m.max_concurrency}


def _provider_json(p: ProviderLimits) -> dict[str, Any]:
    return {"requestsPerMinute": p.requests_per_minute, "burst": p.burst,
            "tokensPerMinute": p.tokens_per_minute, "tokenBurst": p.token_burst,
            "maxConcurrency": p.max_concurrency,
            "modelPatterns": {pat: _model_json(m) for pat, m in p.models.items()}}


def build_limits(config: Config, status: dict[str, Any] | None,
                 provider: str | None = None) -> dict[str, Any]:
    """Per provider: ``configured`` (this directory's config), ``effective`` (what the store
    enforces: the strictest among live instances) and usage; ``status`` may be None when no
    shared state exists yet."""
    live = (status or {}).get("providers", {})
    names = sorted(set(config.providers) | set(live))
    if provider is not None:
        names = [provider]
    out: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {"configured": _provider_json(config.provider_limits(name))}
        state = live.get(name)
        if state is not None:
            entry["effective"] = {k: v for k, v in state.items() if k != "models"}
            entry["models"] = state.get("models", {})
        out[name] = entry
    return {"configSource": config.source, "stateDir": str(config.runtime_dir),
            "shared": status is not None, "providers": out}
