"""The rules of the ``crossInstance`` section that need no schema library: integer bounds,
name and address checks, how a key and a value are shown in an error, and reading the JSON
file.

Kept apart from :mod:`cross_instance.config.schema` (the pydantic models), so that importing
the package, checking an instance id or reading the file loads no validation library; the
schema is imported only when a section is validated. Promises: :func:`read_section` only
reads (never writes), and every problem is one ConfigError(file path, camelCase dotted key,
problem naming the bad value).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Sequence
from typing import Any

from cross_instance.core.ids import is_valid_instance_id
from cross_instance.core.keys import PROVIDER_NAME
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
    "maxWaitMs": (0, 3_600_000),
    "maxBodyBytes": (1024, 1 << 30),
    "upstreamTimeoutMs": (1000, 86_400_000),
    "leaseMs": (100, 86_400_000),
    "maxAttempts": (1, 1000),
    "minQueued": (0, 1_000_000),
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


def base_url_problem(value: str) -> str | None:
    """Why ``value`` is not a provider base URL for the gateway (``http(s)://host[:port]
    [/path]``, no credentials, query or fragment), or None; never echoes a password."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as err:
        return f"not a valid URL ({err})"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return ("must not contain credentials (user:password@): clients send their own "
                "API key, which the gateway passes on")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected http(s)://host[:port][/path] (got {show(value)})"
    if parts.query or parts.fragment:
        return f"must not have a query or fragment (got {show(value)})"
    if any(seg in (".", "..") for seg in parts.path.split("/")):
        return f"must not contain . or .. segments (got {show(value)})"
    return None


def store_url_problem(value: str) -> str | None:
    """Why ``value`` is not a store URL (``sqlite:///dir``, ``redis://``, ``rediss://``,
    ``unix://``, ``http://host:port`` of a daemon), or None; never raises, and never echoes a
    password."""
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
    if scheme == "http":  # a coordinator daemon (as coordinatorAddr)
        if "@" in parts.netloc or parts.path.strip("/") or parts.query:
            return ("expected http://host:port of a coordinator daemon, without credentials "
                    f"(the token goes in PI_COORDINATOR_TOKEN; got {show(redact(value))})")
        return addr_problem(parts.netloc)
    return (f"expected a store URL: sqlite:///dir, redis://host:6379/0, rediss://..., "
            f"unix:///path.sock, http://host:port (a daemon) (got {show(redact(value))})")


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
