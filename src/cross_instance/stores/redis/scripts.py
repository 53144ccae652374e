"""The Redis store's server-side steps: Lua scripts registered once (``SCRIPT LOAD``) and
called by digest (``EVALSHA``, loaded again if the server lost them, as after a restart).

Each script is one operation with the libraries its first line names (``-- needs: clock json
...``) before it, so one operation is one atomic server-side step. Every call runs the
libraries' definitions again, and defining them costs more than most decisions; so only what
is needed is included, and an operation may decide its common case early: a later line
``-- then needs: ...`` places more libraries there, defined only when that line is reached.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

LIBRARIES = ("clock", "json", "limiter", "slots", "arbiter", "adaptive", "permits", "registry",
             "ownership", "locks")  # the order they may depend on each other in
_NEEDS, _THEN = "-- needs:", "-- then needs:"


def _libraries(folder: object, name: str, line: str, marker: str) -> str:
    needs = line.removeprefix(marker).split()
    unknown = set(needs) - set(LIBRARIES)
    if unknown:
        raise ValueError(f"{name}.lua needs unknown libraries {sorted(unknown)}")
    return "\n".join((folder / f"{lib}.lua").read_text(encoding="utf-8")  # type: ignore[operator]
                     for lib in LIBRARIES if lib in needs)


@cache
def source(name: str) -> str:
    """The full text of operation ``name`` (``<name>.lua``) with its libraries in place."""
    folder = resources.files("cross_instance.stores.redis") / "lua"
    lines = (folder / f"{name}.lua").read_text(encoding="utf-8").split("\n")
    out = []
    for i, line in enumerate(lines):
        if (i == 0 and line.startswith(_NEEDS)) or line.startswith(_THEN):
            out.append(_libraries(folder, name, line, _THEN if i else _NEEDS))
        out.append(line)
    return "\n".join(out)
