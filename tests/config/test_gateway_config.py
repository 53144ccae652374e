"""The gateway's and the budgets' settings (issue 17): base URLs checked without echoing a
password, a reserved provider name refused, budgets and prices read and written back, and
the defaults kept as None (so a config without them loads no more modules)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from cross_instance.config import load_config
from cross_instance.errors import ConfigError


def write(base: Path, section: dict[str, Any]) -> None:
    (base / ".pi").mkdir(parents=True, exist_ok=True)
    (base / ".pi" / "config.json").write_text(json.dumps({"crossInstance": section}))


@pytest.mark.parametrize(("url", "problem"), [
    ("http://user:hunter2@example.com/v1", "must not contain credentials"),
    ("ftp://example.com", "expected http(s)://host"),
    ("https://example.com/v1?x=1", "must not have a query"),
    ("https://example.com/../v1", "must not contain . or .."),
    ("http://[::1", "not a valid URL"),
    ("https:///v1", "expected http(s)://host"),
])
def test_bad_base_urls(tmp_path: Path, url: str, problem: str) -> None:
    write(tmp_path, {"providers": {"local": {"baseUrl": url}}})
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, {})
    assert caught.value.key == "crossInstance.providers.local.baseUrl"
    assert problem in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_daemons_own_prefix_is_not_a_provider(tmp_path: Path) -> None:
    write(tmp_path, {"providers": {"v1": {"baseUrl": "http://127.0.0.1:9/v1"}}})
    with pytest.raises(ConfigError, match="cannot have a gateway route"):
        load_config(tmp_path, {})


def test_gateway_budgets_and_prices_round_trip(tmp_path: Path) -> None:
    write(tmp_path, {
        "providers": {"local": {"baseUrl": "http://127.0.0.1:9/v1/"},
                      "eu": {"baseUrl": "https://eu.example", "api": "anthropic"}},
        "gateway": {"maxWaitMs": 0, "maxBodyBytes": 4096},
        "budgets": {"account": {"perDayUsd": 0.5}, "providers": {"eu": {"perMonthUsd": 9}},
                    "onExceed": "wait", "warnShare": 0.5},
        "prices": {"local": {"m-*": {"input": 0.1, "output": 0.2, "cachedInput": 0.01}}}})
    cfg = load_config(tmp_path, {})
    assert cfg.upstream_table()["local"].url_for("chat/completions") == \
        "http://127.0.0.1:9/v1/chat/completions"
    assert cfg.upstream_table()["eu"].url_for("messages") == "https://eu.example/v1/messages"
    assert cfg.gateway_settings().max_wait_ms == 0
    assert cfg.budgets is not None and cfg.budgets.on_exceed == "wait"
    assert cfg.price_table()["local"]["m-*"].cached_input == 0.01
    assert "gpt-4o" in cfg.price_table()["openai"]  # the defaults stay under it
    data = cfg.to_json()
    data.pop("source")
    other = tmp_path / "other"
    write(other, data)
    assert dataclasses.replace(load_config(other, {}), source=cfg.source) == cfg


def test_defaults_are_none(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, {})
    assert (cfg.upstreams, cfg.gateway, cfg.budgets, cfg.prices) == (None, None, None, None)
    assert cfg.upstream_table()["anthropic"].base_url == "https://api.anthropic.com"


@pytest.mark.parametrize(("section", "key"), [
    ({"budgets": {"account": {"perDayUsd": -1}}}, "crossInstance.budgets.account.perDayUsd"),
    ({"budgets": {"warnShare": 0}}, "crossInstance.budgets.warnShare"),
    ({"budgets": {"providers": {"a b": {}}}}, 'crossInstance.budgets.providers["a b"]'),
    ({"prices": {"openai": {"m": {"input": 1}}}}, "crossInstance.prices.openai.m.output"),
    ({"gateway": {"maxBodyBytes": 10}}, "crossInstance.gateway.maxBodyBytes"),
    ({"providers": {"x": {"api": "grpc"}}}, "crossInstance.providers.x.api"),
])
def test_bad_budgets_prices_and_gateway(tmp_path: Path, section: dict[str, Any],
                                        key: str) -> None:
    write(tmp_path, section)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, {})
    assert caught.value.key == key
