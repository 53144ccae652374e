"""Stores, picked by URL: ``sqlite:///<state dir>`` (the embedded default) and
``redis://``, ``rediss://``, ``unix://`` (one Redis for many hosts) and ``http://host:port``
(a coordinator daemon, ``pi-xi serve``; also what ``PI_COORDINATOR_ADDR`` selects). An unknown
scheme is refused by name, and a URL is never echoed with its password."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cross_instance.errors import ConfigError
from cross_instance.stores.base import Store


def open_store(url: str, **options: Any) -> Store:
    """Open the store named by ``url``; ``options`` go to the store's constructor."""
    from cross_instance.stores.redis.connection import redact

    try:
        parts = urlsplit(url)
    except ValueError as err:  # e.g. "Invalid IPv6 URL"
        raise ConfigError("store URL", redact(url), f"not a valid URL ({err})") from None
    if parts.scheme == "sqlite":
        if not parts.path or parts.netloc:
            raise ConfigError("store URL", redact(url),
                              "expected sqlite:///<absolute state directory>")
        from cross_instance.stores.sqlite.store import SqliteStore

        return SqliteStore(Path(parts.path), **options)
    if parts.scheme in ("redis", "rediss", "unix"):
        from cross_instance.stores.redis.store import RedisStore

        return RedisStore(url, **options)
    if parts.scheme == "http":
        from cross_instance.stores.remote.store import RemoteStore, token_from_env

        options.setdefault("token", token_from_env())
        return RemoteStore(url, **options)
    raise ConfigError("store URL", redact(url), f"unsupported store scheme {parts.scheme!r} "
                      "(supported: sqlite, redis, rediss, unix, http)")
