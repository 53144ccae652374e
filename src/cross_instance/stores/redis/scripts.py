"""The Redis store's server-side steps: Lua scripts registered once (``SCRIPT LOAD``) and
called by digest (``EVALSHA``, reloaded by redis-py if the server lost them, as after a
restart). Each script is the libraries its first line names (``-- needs: json limiter ...``)
followed by one operation, so one operation is one atomic server-side step. Only what is
needed is included: every call runs the libraries' definitions again."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

LIBRARIES = ("json", "limiter", "arbiter", "adaptive", "permits", "registry", "ownership",
             "locks")  # the order they may depend on each other in


@cache
def source(name: str) -> str:
    """The full text of operation ``name`` (``<name>.lua``) with the libraries before it."""
    folder = resources.files("cross_instance.stores.redis") / "lua"
    body = (folder / f"{name}.lua").read_text(encoding="utf-8")
    first = body.split("\n", 1)[0]
    needs = first.removeprefix("-- needs:").split() if first.startswith("-- needs:") else []
    unknown = set(needs) - set(LIBRARIES)
    if unknown:
        raise ValueError(f"{name}.lua needs unknown libraries {sorted(unknown)}")
    parts = [(folder / f"{lib}.lua").read_text(encoding="utf-8")
             for lib in LIBRARIES if lib in needs]
    return "\n".join([*parts, body])


def register(client: Any, name: str) -> Any:
    """A callable script object for ``client`` (``script(keys=[...], args=[...])``)."""
    return client.register_script(source(name))
