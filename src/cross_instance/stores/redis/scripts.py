"""The Redis store's server-side steps: Lua scripts registered once (``SCRIPT LOAD``) and
called by digest (``EVALSHA``, reloaded by redis-py if the server lost them, as after a
restart). Each script is a library (``limiter.lua``, ...) followed by one operation, so one
operation is one atomic server-side step."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

LIBRARIES = ("json.lua", "limiter.lua", "arbiter.lua", "adaptive.lua", "permits.lua",
             "registry.lua", "ownership.lua", "locks.lua")


@cache
def source(name: str) -> str:
    """The full text of operation ``name`` (``<name>.lua``) with the libraries before it."""
    folder = resources.files("cross_instance.stores.redis") / "lua"
    parts = [(folder / lib).read_text(encoding="utf-8") for lib in LIBRARIES]
    parts.append((folder / f"{name}.lua").read_text(encoding="utf-8"))
    return "\n".join(parts)


def register(client: Any, name: str) -> Any:
    """A callable script object for ``client`` (``script(keys=[...], args=[...])``)."""
    return client.register_script(source(name))
