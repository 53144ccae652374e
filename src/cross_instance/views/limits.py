"""The limits view (``pi-xi limits``): configured limits merged with the shared state."""

from __future__ import annotations

from typing import Any

from cross_instance.config import Config
from cross_instance.core.limits import ModelLimits, ProviderLimits
from cross_instance.stores.base import Store


def _model_json(m: ModelLimits) -> dict[str, Any]:
    return {"requestsPerMinute": m.requests_per_minute, "burst": m.burst,
            "tokensPerMinute": m.tokens_per_minute, "tokenBurst": m.token_burst,
            "maxConcurrency": m.max_concurrency}


def _provider_json(p: ProviderLimits) -> dict[str, Any]:
    return {"requestsPerMinute": p.requests_per_minute, "burst": p.burst,
            "tokensPerMinute": p.tokens_per_minute, "tokenBurst": p.token_burst,
            "maxConcurrency": p.max_concurrency,
            "modelPatterns": {pat: _model_json(m) for pat, m in p.models.items()}}


def read_budgets(store: Store, config: Config) -> list[dict[str, Any]]:
    """Every spend budget of ``config`` with what it has spent this period (one store read;
    empty without budgets)."""
    if config.budgets is None:
        return []
    from cross_instance.runtime.spending import Spending

    keeper = Spending(store, config.budgets, config.price_table())
    return [line.to_json() for line in keeper.lines()]


def build_limits(config: Config, status: dict[str, Any] | None,
                 provider: str | None = None,
                 budgets: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per provider: ``configured`` (this directory's config), ``effective`` (what the store
    enforces: the strictest among live instances) and usage; ``status`` may be None when no
    shared state exists yet. ``budgets``: ``read_budgets``' lines (spent and left of each
    spend budget), for ``provider`` and the account's when one is named."""
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
    lines = [b for b in budgets or []
             if provider is None or b["provider"] in (None, provider)]
    return {"configSource": config.source, "stateDir": str(config.runtime_dir),
            "shared": status is not None, "providers": out, "budgets": lines}
