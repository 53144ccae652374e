"""The ``crossInstance`` file schema and its translation into one-line ConfigErrors.

Internal to :mod:`cross_instance.config`. Promises: :func:`read_section` only reads (never
writes), and every invalid input yields exactly one ConfigError(file path, camelCase dotted key,
problem naming the bad value).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from cross_instance.core.ids import is_valid_instance_id
from cross_instance.core.keys import PROVIDER_NAME
from cross_instance.core.limits import DEFAULT_MAX_COOLDOWN_MS
from cross_instance.core.modelmatch import pattern_problem
from cross_instance.errors import ConfigError

MAX_FILE_BYTES = 1 << 20

#: Inclusive bounds of every integer setting, by camelCase name.
BOUNDS: dict[str, tuple[int, int]] = {
    "coordinatorPort": (1, 65535),
    "totalMaxLlm": (1, 10_000),
    "heartbeatIntervalMs": (50, 3_600_000),
    "heartbeatTimeoutMs": (1, 86_400_000),
    "requestsPerMinute": (1, 10_000_000),
    "burst": (1, 10_000),
    "tokensPerMinute": (1, 1_000_000_000),
    "tokenBurst": (1, 1_000_000_000),
    "maxConcurrency": (1, 100_000),
    "priority": (1, 1000),
    "reservedCapacity": (0, 10_000),
    "minRequestsPerMinute": (1, 10_000_000),
    "maxRequestsPerMinute": (1, 10_000_000),
    "maxCooldownMs": (1000, 86_400_000),
}

_PROVIDER = PROVIDER_NAME
_ADDR = re.compile(r"(\[[0-9A-Za-z:.%]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")
_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def show(value: object) -> str:
    """A short, single-line, JSON-like rendering of a bad value."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def key_path(loc: Sequence[object]) -> str:
    """Dotted camelCase key; segments that are not plain words are written ``["..."]``."""
    out = ""
    for seg in loc:
        if seg == "[key]":
            continue
        text = str(seg)
        if isinstance(seg, str) and _SIMPLE_KEY.fullmatch(text):
            out += f".{text}" if out else text
        else:
            out += f"[{show(text)}]"
    return out


def instance_id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid instance id, or None."""
    if is_valid_instance_id(value):
        return None
    return (
        f"invalid instance id (got {show(value)}): use 1-128 characters from A-Z a-z 0-9 . _ : @ -"
        ", starting with a letter or digit"
    )


def provider_name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid provider name, or None."""
    if _PROVIDER.fullmatch(value):
        return None
    return (
        f"invalid provider name (got {show(value)}): use 1-64 characters from A-Z a-z 0-9 _ . -"
        ", starting with a letter or digit"
    )


def addr_problem(value: str) -> str | None:
    """Why ``value`` is not a ``host:port`` address (port 1..65535), or None."""
    m = _ADDR.fullmatch(value)
    if m is None:
        return f'must be "host:port" (got {show(value)})'
    if not 1 <= int(m.group(2)) <= 65535:
        return f"port must be 1..65535 (got {show(value)})"
    return None


def runtime_dir_problem(value: str) -> str | None:
    """Why ``value`` cannot name the state directory, or None."""
    if not value.strip():
        return f"must be a non-empty path (got {show(value)})"
    if "\0" in value:
        return f"must not contain NUL characters (got {show(value)})"
    return None


def store_url_problem(value: str) -> str | None:
    """Why ``value`` is not a store URL (``sqlite:///dir``, ``redis://``, ``rediss://``,
    ``unix://``), or None; never raises, and never echoes a password."""
    from urllib.parse import urlsplit

    from cross_instance.stores.redis.connection import redact

    try:
        parts = urlsplit(value)
    except ValueError as err:  # e.g. "Invalid IPv6 URL"
        return f"not a valid URL ({err}; got {show(redact(value))})"
    scheme = parts.scheme
    if scheme == "sqlite":
        if not parts.path.startswith("/") or parts.netloc:
            return f"expected sqlite:///<absolute state directory> (got {show(redact(value))})"
        return None
    if scheme in ("redis", "rediss", "unix"):
        from cross_instance.errors import ConfigError
        from cross_instance.stores.redis.connection import parse_url

        try:
            parse_url(value)
        except ConfigError as err:
            return err.problem
        return None
    return (f"expected a store URL: sqlite:///dir, redis://host:6379/0, rediss://..., "
            f"unix:///path.sock (got {show(redact(value))})")


def _checked(problem: Callable[[str], str | None]) -> AfterValidator:
    def check(value: str) -> str:
        text = problem(value)
        if text is not None:
            raise PydanticCustomError("config_problem", "{problem}", {"problem": text})
        return value

    return AfterValidator(check)


def _b(name: str) -> Any:
    """Field constraints for the integer setting ``name`` (see BOUNDS)."""
    lo, hi = BOUNDS[name]
    return Field(ge=lo, le=hi)


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, allow_inf_nan=False
    )


class LimitsIn(_Strict):
    """A model entry, as written; every field optional (null = omitted)."""

    requests_per_minute: Annotated[int, _b("requestsPerMinute")] | None = None
    burst: Annotated[int, _b("burst")] | None = None
    tokens_per_minute: Annotated[int, _b("tokensPerMinute")] | None = None
    token_burst: Annotated[int, _b("tokenBurst")] | None = None
    max_concurrency: Annotated[int, _b("maxConcurrency")] | None = None


class ProviderIn(LimitsIn):
    """A provider entry, as written; omitted fields fall back to the provider's defaults."""

    models: dict[Annotated[str, _checked(pattern_problem)], LimitsIn] = {}


class InstanceIn(_Strict):
    priority: Annotated[int, _b("priority")] = 1
    reserved_capacity: Annotated[int, _b("reservedCapacity")] = 0


class AdaptiveIn(_Strict):
    enabled: bool = True
    reduction_factor: Annotated[float, Field(gt=0, lt=1)] = 0.9
    recovery_factor: Annotated[float, Field(gt=1, le=2)] = 1.05
    min_requests_per_minute: Annotated[int, _b("minRequestsPerMinute")] = 1
    max_requests_per_minute: Annotated[int, _b("maxRequestsPerMinute")] | None = None
    max_cooldown_ms: Annotated[int, _b("maxCooldownMs")] = DEFAULT_MAX_COOLDOWN_MS


class SectionIn(_Strict):
    """The ``crossInstance`` section, field by field validated (cross-field rules excluded)."""

    enabled: bool = True
    coordinator_port: Annotated[int, _b("coordinatorPort")] = 8765
    coordinator_addr: Annotated[str, _checked(addr_problem)] = "localhost:8765"
    instance_id: Annotated[str, _checked(instance_id_problem)] | None = None
    total_max_llm: Annotated[int, _b("totalMaxLlm")] = 6
    heartbeat_interval_ms: Annotated[int, _b("heartbeatIntervalMs")] = 2000
    heartbeat_timeout_ms: Annotated[int, _b("heartbeatTimeoutMs")] = 10000
    runtime_dir: Annotated[str, _checked(runtime_dir_problem)] | None = None
    store: Annotated[str, _checked(store_url_problem)] | None = None
    when_store_down: Literal["fail", "local-share"] = "fail"
    providers: dict[Annotated[str, _checked(provider_name_problem)], ProviderIn] = {}
    instances: dict[Annotated[str, _checked(instance_id_problem)], InstanceIn] = {}
    adaptive_rate_control: AdaptiveIn = AdaptiveIn()


def _num(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


_TYPE_PROBLEMS = {
    "int_type": "expected an integer",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
}
_BOUND_PROBLEMS = {
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
}


def pydantic_problem(err: ErrorDetails) -> str:
    """One short problem text for a pydantic error, naming the bad value."""
    kind, ctx = err["type"], err.get("ctx") or {}
    got = f" (got {show(err.get('input'))})"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "config_problem":
        return str(ctx["problem"])
    if kind == "missing":
        return "is required"
    if kind in _TYPE_PROBLEMS:
        return _TYPE_PROBLEMS[kind] + got
    if kind in _BOUND_PROBLEMS:
        name, op = _BOUND_PROBLEMS[kind]
        return f"must be {op} {_num(ctx[name])}{got}"
    return err["msg"] + got


def read_section(path: str, section: str) -> dict[str, Any] | None:
    """The ``section`` object of the JSON file at ``path`` ({} if the key is absent), or None if
    there is no file. Raises ConfigError for anything unreadable or malformed."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise ConfigError(path, "", "is a broken symbolic link") from None
        return None
    except NotADirectoryError:
        raise ConfigError(path, "", "cannot be read: its parent is not a directory") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(path, "", "is a directory, expected a JSON file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(path, "", "is not a regular file")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, "", f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(path, "", f"is larger than {MAX_FILE_BYTES} bytes")
    doc = _parse_json(data, path)
    if not isinstance(doc, dict):
        raise ConfigError(path, "", f"must be a JSON object (got {show(doc)})")
    if section not in doc:
        return {}
    value = doc[section]
    if not isinstance(value, dict):
        raise ConfigError(path, section, f"must be an object (got {show(value)})")
    return value


class _NotJsonConstant(ValueError):
    """NaN / Infinity / -Infinity: accepted by Python's json module, not by JSON."""


def _reject_constant(name: str) -> object:
    raise _NotJsonConstant(name)


def _parse_json(data: bytes, path: str) -> object:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, "", f"is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            path, "", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ConfigError(path, "", "invalid JSON: nested too deeply") from None
    except _NotJsonConstant as exc:
        raise ConfigError(path, "", f"invalid JSON: {exc} is not a JSON value") from None
    except ValueError as exc:  # e.g. an integer literal with thousands of digits
        raise ConfigError(path, "", f"invalid JSON: {exc}") from None


def validate_section(raw: dict[str, Any], path: str, section: str) -> SectionIn:
    """``raw`` validated field by field plus the rules local to the file (tokenBurst needs
    tokensPerMinute, a model's burst needs its requestsPerMinute, adaptive min <= max)."""
    try:
        parsed = SectionIn.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise ConfigError(path, key_path((section, *err["loc"])), pydantic_problem(err)) from None
    for name, provider in parsed.providers.items():
        where: tuple[str, ...] = (section, "providers", name)
        _pair_rule(provider, path, where)
        for pattern, model in provider.models.items():
            _pair_rule(model, path, (*where, "models", pattern))
            if model.burst is not None and model.requests_per_minute is None:
                raise ConfigError(
                    path,
                    key_path((*where, "models", pattern, "burst")),
                    f"needs requestsPerMinute in the same entry (got burst {model.burst} alone)",
                )
    ad = parsed.adaptive_rate_control
    if ad.max_requests_per_minute is not None and (
        ad.min_requests_per_minute > ad.max_requests_per_minute
    ):
        raise ConfigError(
            path,
            key_path((section, "adaptiveRateControl", "minRequestsPerMinute")),
            f"must be <= maxRequestsPerMinute {ad.max_requests_per_minute}"
            f" (got {ad.min_requests_per_minute})",
        )
    return parsed


def _pair_rule(limits: LimitsIn, path: str, where: tuple[str, ...]) -> None:
    if limits.token_burst is not None and limits.tokens_per_minute is None:
        raise ConfigError(
            path,
            key_path((*where, "tokenBurst")),
            f"needs tokensPerMinute in the same entry (got tokenBurst {limits.token_burst} alone)",
        )
