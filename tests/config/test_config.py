"""Config loading: one precise ConfigError per bad input, defaults, env overrides, resolution."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from cross_instance.config import (
    DEFAULT_PROVIDER_LIMITS,
    UNKNOWN_PROVIDER_LIMITS,
    Config,
    InstancePolicy,
    ProviderLimits,
    env_overrides,
    load_config,
    validate_instance_id,
)
from cross_instance.core.limiter import RateSpec
from cross_instance.errors import ConfigError


def write(cwd: Path, section: Any = None, *, raw: str | bytes | None = None) -> str:
    """Write ``.pi/config.json`` under ``cwd``; returns its path as load_config reports it."""
    (cwd / ".pi").mkdir(exist_ok=True)
    path = cwd / ".pi" / "config.json"
    if raw is None:
        raw = json.dumps({"otherTool": {"x": 1}, "crossInstance": section})
    if isinstance(raw, bytes):
        path.write_bytes(raw)
    else:
        path.write_text(raw, encoding="utf-8")
    return str(path)


def failure(cwd: Path, env: dict[str, str] | None = None) -> tuple[str, str, str]:
    with pytest.raises(ConfigError) as info:
        load_config(cwd, env or {})
    err = info.value
    where = f"{err.source}: {err.key}" if err.key else err.source
    assert str(err) == f"{where}: {err.problem}" and "\n" not in str(err)
    return err.source, err.key, err.problem


FILE_CASES: list[tuple[str, Any, str, str]] = [
    ("unknown top key", {"bogus": 1}, "crossInstance.bogus", "unknown key"),
    ("snake case key", {"total_max_llm": 3}, "crossInstance.total_max_llm", "unknown key"),
    ("unknown provider key", {"providers": {"openai": {"rpm": 5}}},
     "crossInstance.providers.openai.rpm", "unknown key"),
    ("unknown model key", {"providers": {"openai": {"models": {"gpt-4*": {"brust": 5}}}}},
     'crossInstance.providers.openai.models["gpt-4*"].brust', "unknown key"),
    ("string for int", {"totalMaxLlm": "5"}, "crossInstance.totalMaxLlm",
     'expected an integer (got "5")'),
    ("bool for int", {"totalMaxLlm": True}, "crossInstance.totalMaxLlm",
     "expected an integer (got true)"),
    ("float for int", {"totalMaxLlm": 5.0}, "crossInstance.totalMaxLlm",
     "expected an integer (got 5.0)"),
    ("int for bool", {"enabled": 1}, "crossInstance.enabled", "expected true or false (got 1)"),
    ("zero limit", {"providers": {"openai": {"requestsPerMinute": 0}}},
     "crossInstance.providers.openai.requestsPerMinute", "must be >= 1 (got 0)"),
    ("negative limit", {"providers": {"openai": {"burst": -3}}},
     "crossInstance.providers.openai.burst", "must be >= 1 (got -3)"),
    ("burst over 10000", {"providers": {"openai": {"burst": 20000}}},
     "crossInstance.providers.openai.burst", "must be <= 10000 (got 20000)"),
    ("model burst over 10000", {"providers": {"x": {"models": {"m": {"burst": 10001}}}}},
     "crossInstance.providers.x.models.m.burst", "must be <= 10000 (got 10001)"),
    ("zero total", {"totalMaxLlm": 0}, "crossInstance.totalMaxLlm", "must be >= 1 (got 0)"),
    ("bad port", {"coordinatorPort": 70000}, "crossInstance.coordinatorPort",
     "must be <= 65535 (got 70000)"),
    ("addr without port", {"coordinatorAddr": "localhost"}, "crossInstance.coordinatorAddr",
     'must be "host:port" (got "localhost")'),
    ("addr port out of range", {"coordinatorAddr": "h:99999"}, "crossInstance.coordinatorAddr",
     'port must be 1..65535 (got "h:99999")'),
    ("interval too small", {"heartbeatIntervalMs": 10}, "crossInstance.heartbeatIntervalMs",
     "must be >= 50 (got 10)"),
    ("providers not an object", {"providers": []}, "crossInstance.providers",
     "must be an object (got an array)"),
    ("provider not an object", {"providers": {"openai": 5}}, "crossInstance.providers.openai",
     "must be an object (got 5)"),
    ("empty runtime dir", {"runtimeDir": ""}, "crossInstance.runtimeDir",
     'must be a non-empty path (got "")'),
    ("empty model pattern", {"providers": {"openai": {"models": {"": {}}}}},
     'crossInstance.providers.openai.models[""]', "model pattern must not be empty"),
    ("control char pattern", {"providers": {"openai": {"models": {"a\nb": {}}}}},
     'crossInstance.providers.openai.models["a\\nb"]',
     "model pattern must not contain control characters"),
    ("tokenBurst alone", {"providers": {"openai": {"tokenBurst": 500}}},
     "crossInstance.providers.openai.tokenBurst",
     "needs tokensPerMinute in the same entry (got tokenBurst 500 alone)"),
    ("model burst alone", {"providers": {"openai": {"models": {"m": {"burst": 3}}}}},
     "crossInstance.providers.openai.models.m.burst",
     "needs requestsPerMinute in the same entry (got burst 3 alone)"),
    ("reduction factor 1", {"adaptiveRateControl": {"reductionFactor": 1.0}},
     "crossInstance.adaptiveRateControl.reductionFactor", "must be < 1 (got 1.0)"),
    ("adaptive min > max",
     {"adaptiveRateControl": {"minRequestsPerMinute": 10, "maxRequestsPerMinute": 5}},
     "crossInstance.adaptiveRateControl.minRequestsPerMinute",
     "must be <= maxRequestsPerMinute 5 (got 10)"),
    ("max cooldown below a second", {"adaptiveRateControl": {"maxCooldownMs": 10}},
     "crossInstance.adaptiveRateControl.maxCooldownMs", "must be >= 1000 (got 10)"),
    ("max cooldown over a day", {"adaptiveRateControl": {"maxCooldownMs": 86_400_001}},
     "crossInstance.adaptiveRateControl.maxCooldownMs", "must be <= 86400000 (got 86400001)"),
    ("max cooldown not an integer", {"adaptiveRateControl": {"maxCooldownMs": "5m"}},
     "crossInstance.adaptiveRateControl.maxCooldownMs", 'expected an integer (got "5m")'),
    ("timeout below 2x interval", {"heartbeatIntervalMs": 1000, "heartbeatTimeoutMs": 1500},
     "crossInstance.heartbeatTimeoutMs", "must be >= 2 * heartbeatIntervalMs = 2000 (got 1500)"),
    ("reservation over total", {"totalMaxLlm": 2, "instances": {"a": {"reservedCapacity": 3}}},
     "crossInstance.instances.a.reservedCapacity", "must be <= totalMaxLlm 2 (got 3)"),
    ("reservations sum over total",
     {"totalMaxLlm": 4, "instances": {"a": {"reservedCapacity": 3}, "b": {"reservedCapacity": 2}}},
     "crossInstance.instances", "reservedCapacity sums to 5, more than totalMaxLlm 4"),
    ("priority over 1000", {"instances": {"a": {"priority": 1001}}},
     "crossInstance.instances.a.priority", "must be <= 1000 (got 1001)"),
]


@pytest.mark.parametrize(("section", "key", "problem"), [c[1:] for c in FILE_CASES],
                         ids=[c[0] for c in FILE_CASES])
def test_bad_file_value(tmp_path: Path, section: Any, key: str, problem: str) -> None:
    path = write(tmp_path, section)
    assert failure(tmp_path) == (path, key, problem)


@pytest.mark.parametrize(("section", "key"), [
    ({"instanceId": "bad id"}, "crossInstance.instanceId"),
    ({"instances": {"bad id": {}}}, 'crossInstance.instances["bad id"]'),
])
def test_malformed_instance_id_in_file(tmp_path: Path, section: Any, key: str) -> None:
    path = write(tmp_path, section)
    source, got_key, problem = failure(tmp_path)
    assert (source, got_key) == (path, key)
    assert problem.startswith("invalid instance id (got ")


def test_bad_provider_name(tmp_path: Path) -> None:
    path = write(tmp_path, {"providers": {"open ai": {}}})
    source, key, problem = failure(tmp_path)
    assert (source, key) == (path, 'crossInstance.providers["open ai"]')
    assert problem.startswith('invalid provider name (got "open ai")')


@pytest.mark.parametrize(("raw", "key", "problem"), [
    ('{\n  "crossInstance": {\n    "enabled": true\n    "totalMaxLlm": 2}}', "",
     "invalid JSON at line 4 column 5: Expecting ',' delimiter"),
    ("", "", "invalid JSON at line 1 column 1: Expecting value"),
    ('{"crossInstance": {"totalMaxLlm": NaN}}', "", "invalid JSON: NaN is not a JSON value"),
    ("[1, 2]", "", "must be a JSON object (got an array)"),
    ('{"crossInstance": 5}', "crossInstance", "must be an object (got 5)"),
    ('{"crossInstance": null}', "crossInstance", "must be an object (got null)"),
    (b'{"crossInstance": {"instanceId": "\xff"}}', "",
     "is not valid UTF-8 (byte 0xff at offset 34)"),
])
def test_bad_file_content(tmp_path: Path, raw: str | bytes, key: str, problem: str) -> None:
    path = write(tmp_path, raw=raw)
    assert failure(tmp_path) == (path, key, problem)


def test_file_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / ".pi" / "config.json").mkdir(parents=True)
    path = str(tmp_path / ".pi" / "config.json")
    assert failure(tmp_path) == (path, "", "is a directory, expected a JSON file")


def test_pi_is_a_file_or_config_is_a_fifo(tmp_path: Path) -> None:
    (tmp_path / ".pi").write_text("not a directory")
    path = str(tmp_path / ".pi" / "config.json")
    assert failure(tmp_path) == (path, "", "cannot be read: its parent is not a directory")
    (tmp_path / ".pi").unlink()
    (tmp_path / ".pi").mkdir()
    os.mkfifo(path)  # must not block waiting for a writer
    assert failure(tmp_path) == (path, "", "is not a regular file")


def test_broken_symlink_and_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / ".pi").mkdir()
    link = tmp_path / ".pi" / "config.json"
    link.symlink_to(tmp_path / "missing.json")
    assert failure(tmp_path)[2] == "is a broken symbolic link"
    link.unlink()
    write(tmp_path, {})
    if os.geteuid() != 0:  # root reads anything
        link.chmod(0)
        assert failure(tmp_path)[2] == "cannot be read: Permission denied"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    write(tmp_path, raw=b"\xef\xbb\xbf" + b'{"crossInstance": {"totalMaxLlm": 3}}')
    assert load_config(tmp_path, {}).total_max_llm == 3


ENV_CASES: list[tuple[str, str, str, str]] = [
    ("PI_TOTAL_MAX_LLM", "abc", "crossInstance.totalMaxLlm", 'expected an integer (got "abc")'),
    ("PI_TOTAL_MAX_LLM", "1.5", "crossInstance.totalMaxLlm", 'expected an integer (got "1.5")'),
    ("PI_TOTAL_MAX_LLM", "0", "crossInstance.totalMaxLlm", "must be >= 1 (got 0)"),
    ("PI_TOTAL_MAX_LLM", "99" * 20, "crossInstance.totalMaxLlm",
     f'must be <= 10000 (got "{"99" * 20}")'),
    ("PI_HEARTBEAT_INTERVAL_MS", "-5", "crossInstance.heartbeatIntervalMs",
     "must be >= 50 (got -5)"),
    ("PI_CROSS_INSTANCE_ENABLED", "maybe", "crossInstance.enabled",
     'expected true/false/1/0/yes/no/on/off (got "maybe")'),
    ("PI_COORDINATOR_PORT", "70000", "crossInstance.coordinatorPort",
     "must be <= 65535 (got 70000)"),
    ("PI_COORDINATOR_ADDR", "no port", "crossInstance.coordinatorAddr",
     'must be "host:port" (got "no port")'),
    ("PI_RUNTIME_DIR", "   ", "crossInstance.runtimeDir", 'must be a non-empty path (got "   ")'),
    ("PI_STORE_URL", "redis://h:99999", "crossInstance.store",
     "the port must be a number from 1 to 65535"),
    ("PI_STORE_URL", "memcached://h", "crossInstance.store",
     'expected a store URL: sqlite:///dir, redis://host:6379/0, rediss://..., '
     'unix:///path.sock, http://host:port (a daemon) (got "memcached://h")'),
    ("PI_WHEN_STORE_DOWN", "open", "crossInstance.whenStoreDown",
     'expected "fail" or "local-share" (got "open")'),
    ("PI_STORE_URL", "sqlite://relative", "crossInstance.store",
     'expected sqlite:///<absolute state directory> (got "sqlite://relative")'),
    ("PI_HEARTBEAT_TIMEOUT_MS", "3000", "crossInstance.heartbeatTimeoutMs",
     "must be >= 2 * heartbeatIntervalMs = 4000 (got 3000)"),
    ("PI_HEARTBEAT_INTERVAL_MS", "6000", "crossInstance.heartbeatTimeoutMs",
     "must be >= 2 * heartbeatIntervalMs = 12000 (got 10000)"),
]


@pytest.mark.parametrize(("var", "value", "key", "problem"), ENV_CASES)
def test_bad_env_value(tmp_path: Path, var: str, value: str, key: str, problem: str) -> None:
    assert failure(tmp_path, {var: value}) == (var, key, problem)


def test_store_url_from_file_and_env(tmp_path: Path) -> None:
    write(tmp_path, {"store": "redis://:secret@h:6379/2?prefix=team-a:"})
    assert load_config(tmp_path, {}).store == "redis://:secret@h:6379/2?prefix=team-a:"
    assert load_config(tmp_path, {"PI_STORE_URL": "unix:///run/r.sock"}).store == (
        "unix:///run/r.sock")
    assert load_config(tmp_path, {}).when_store_down == "fail"
    assert load_config(tmp_path, {"PI_WHEN_STORE_DOWN": "local-share"}).when_store_down == (
        "local-share")
    write(tmp_path, {"store": "redis://:secret@h/x"})
    _source, key, problem = failure(tmp_path, {})
    assert key == "crossInstance.store" and "database" in problem and "secret" not in problem


def test_malformed_instance_id_in_env(tmp_path: Path) -> None:
    source, key, problem = failure(tmp_path, {"PI_INSTANCE_ID": "has space"})
    assert (source, key) == ("PI_INSTANCE_ID", "crossInstance.instanceId")
    assert problem.startswith('invalid instance id (got "has space")')


def test_env_total_below_file_reservations_blames_env(tmp_path: Path) -> None:
    write(tmp_path, {"instances": {"a": {"reservedCapacity": 2}, "b": {"reservedCapacity": 2}}})
    assert load_config(tmp_path, {}).policy_for("a") == InstancePolicy(1, 2)
    assert failure(tmp_path, {"PI_TOTAL_MAX_LLM": "3"}) == (
        "PI_TOTAL_MAX_LLM", "crossInstance.instances",
        "reservedCapacity sums to 4, more than totalMaxLlm 3")


@pytest.mark.parametrize(("word", "value"), [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("On", True),
    ("false", False), ("0", False), ("no", False), ("OFF", False), (" off ", False),
])
def test_env_bool_words(word: str, value: bool) -> None:
    assert env_overrides({"PI_CROSS_INSTANCE_ENABLED": word}) == {"enabled": value}


def test_env_overrides_parses_and_ignores_empty() -> None:
    env = {"PI_TOTAL_MAX_LLM": " 4 ", "PI_INSTANCE_ID": "lead@host:1", "PI_RUNTIME_DIR": "",
           "PI_COORDINATOR_ADDR": "[::1]:9000", "PI_COORDINATOR_PORT": "", "UNRELATED": "x"}
    assert env_overrides(env) == {
        "totalMaxLlm": 4, "instanceId": "lead@host:1", "coordinatorAddr": "[::1]:9000"}


def test_env_beats_file(tmp_path: Path) -> None:
    write(tmp_path, {"totalMaxLlm": 4, "instanceId": "from-file", "enabled": True,
                     "heartbeatIntervalMs": 1000, "heartbeatTimeoutMs": 5000})
    cfg = load_config(tmp_path, {"PI_TOTAL_MAX_LLM": "9", "PI_INSTANCE_ID": "from-env",
                                 "PI_CROSS_INSTANCE_ENABLED": "no",
                                 "PI_HEARTBEAT_TIMEOUT_MS": "2000",
                                 "PI_RUNTIME_DIR": "state", "PI_COORDINATOR_PORT": "9001"})
    assert (cfg.total_max_llm, cfg.instance_id, cfg.enabled) == (9, "from-env", False)
    assert (cfg.heartbeat_interval_ms, cfg.heartbeat_timeout_ms) == (1000, 2000)
    assert cfg.runtime_dir == tmp_path / "state"  # relative paths are relative to cwd
    assert cfg.coordinator_port == 9001


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load_config(tmp_path, {})
    assert cfg == Config()
    assert cfg.source == "defaults"
    assert cfg.runtime_dir == tmp_path / "home" / ".pi" / "runtime"
    assert (cfg.enabled, cfg.coordinator_port, cfg.coordinator_addr) == (
        True, 8765, None)
    assert (cfg.total_max_llm, cfg.heartbeat_interval_ms, cfg.heartbeat_timeout_ms) == (
        6, 2000, 10000)
    assert cfg.instance_id is None and cfg.policy_for("anyone") == InstancePolicy(1, 0)
    assert {n: (p.requests_per_minute, p.burst) for n, p in DEFAULT_PROVIDER_LIMITS.items()} == {
        "openai": (500, 100), "anthropic": (50, 25), "deepseek": (1000, 200), "gemini": (60, 15)}
    assert dict(cfg.providers) == dict(DEFAULT_PROVIDER_LIMITS)


def test_file_without_section_uses_defaults_but_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, raw='{"someOtherTool": {"anything": [1, 2]}}')
    cfg = load_config(tmp_path, {})
    assert cfg.source == path and cfg.total_max_llm == 6


def test_unknown_provider_is_conservative(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, {})
    assert cfg.provider_limits("mistral") is UNKNOWN_PROVIDER_LIMITS
    assert cfg.resolve("mistral", "large").requests == RateSpec(30, 5)
    assert cfg.provider_limits("OpenAI") is UNKNOWN_PROVIDER_LIMITS  # names are exact


def test_omitted_provider_fields_fill_in(tmp_path: Path) -> None:
    write(tmp_path, {"providers": {
        "openai": {"burst": 10}, "anthropic": {"requestsPerMinute": 100},
        "mistral": {"maxConcurrency": 3}, "big": {"requestsPerMinute": 10_000_000}}})
    cfg = load_config(tmp_path, {})
    assert cfg.provider_limits("openai").requests == RateSpec(500, 10)
    assert cfg.provider_limits("anthropic").requests == RateSpec(100, 20)  # rpm // 5
    assert cfg.provider_limits("mistral") == ProviderLimits(30, 5, max_concurrency=3)
    assert cfg.provider_limits("big").burst == 10_000


def test_token_burst_defaults_to_tokens_per_minute(tmp_path: Path) -> None:
    write(tmp_path, {"providers": {"openai": {
        "tokensPerMinute": 30000,
        "models": {"a*": {"tokensPerMinute": 800}, "b*": {"tokensPerMinute": 900,
                                                          "tokenBurst": 50}}}}})
    cfg = load_config(tmp_path, {})
    assert cfg.resolve("openai", None).tokens == RateSpec(30000, 30000)
    assert cfg.resolve("openai", "a1").model_tokens == RateSpec(800, 800)
    assert cfg.resolve("openai", "b1").model_tokens == RateSpec(900, 50)


def test_model_resolution_most_specific_first(tmp_path: Path) -> None:
    write(tmp_path, {"providers": {"openai": {"maxConcurrency": 8, "models": {
        "*": {"maxConcurrency": 4},
        "gpt-4*": {"requestsPerMinute": 100},
        "gpt-4o*": {"requestsPerMinute": 50, "burst": 7},
        "gpt-4o": {"requestsPerMinute": 3},
    }}}})
    cfg = load_config(tmp_path, {})
    exact = cfg.resolve("openai", "gpt-4o")
    assert (exact.model_pattern, exact.model_requests) == ("gpt-4o", RateSpec(3, 1))
    assert exact.requests == RateSpec(500, 100) and exact.max_concurrency == 8
    assert cfg.resolve("openai", "gpt-4o-mini").model_requests == RateSpec(50, 7)
    assert cfg.resolve("openai", "gpt-4-turbo").model_pattern == "gpt-4*"
    other = cfg.resolve("openai", "o3")
    assert (other.model_pattern, other.model_requests, other.model_max_concurrency) == (
        "*", None, 4)
    none = cfg.resolve("openai", None)
    assert (none.model_pattern, none.model_requests, none.model) == (None, None, None)


def test_to_json_round_trips(tmp_path: Path) -> None:
    write(tmp_path, {"instanceId": "me", "providers": {"x": {"tokensPerMinute": 5,
                     "models": {"m?": {"requestsPerMinute": 9}}}},
                     "instances": {"me": {"priority": 5, "reservedCapacity": 1}},
                     "adaptiveRateControl": {"recoveryFactor": 2, "maxRequestsPerMinute": 9,
                                             "maxCooldownMs": 60_000}})
    cfg = load_config(tmp_path, {})
    assert cfg.adaptive.max_cooldown_ms == 60_000
    assert Config().adaptive.max_cooldown_ms == 300_000
    data = cfg.to_json()
    assert data.pop("source") == cfg.source
    other = tmp_path / "other"
    other.mkdir()
    write(other, data)
    again = load_config(other, {})
    assert dataclasses.replace(again, source=cfg.source) == cfg
    assert json.loads(json.dumps(cfg.to_json())) == cfg.to_json()


def test_config_is_immutable() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.total_max_llm = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.providers["x"] = UNKNOWN_PROVIDER_LIMITS  # type: ignore[index]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


@pytest.mark.parametrize("section", [None, {"totalMaxLlm": 3}, {"bogus": 1}])
def test_loading_never_writes(tmp_path: Path, section: Any) -> None:
    if section is not None:
        write(tmp_path, section)
    before = snapshot(tmp_path)
    try:
        load_config(tmp_path, {"PI_RUNTIME_DIR": str(tmp_path / "state")})
    except ConfigError:
        pass
    assert snapshot(tmp_path) == before


def test_validate_instance_id() -> None:
    assert validate_instance_id("host-1:42@x.y_z", "src", "k") == "host-1:42@x.y_z"
    for bad in ["", "-x", "a" * 129, "a/b", "ä"]:
        with pytest.raises(ConfigError) as info:
            validate_instance_id(bad, "src", "k")
        assert (info.value.source, info.value.key) == ("src", "k")
