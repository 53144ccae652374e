"""The Redis store's server-side steps, written once in Lua and delivered in one of two forms:

- a **function library** (Redis 7+): every library and operation is defined once, when the
  library is loaded (``FUNCTION LOAD``), and an operation is one ``FCALL``. The library's name
  carries the digest of its text, so instances running different versions of this package
  share one Redis without replacing each other's code;
- **scripts** (any Redis, or where ``FUNCTION`` is not allowed): each operation with the
  libraries it needs is one script, registered once (``SCRIPT LOAD``) and called by its digest
  (``EVALSHA``). Every call then runs the libraries' definitions again, which costs more than
  most decisions; so only what is needed is included (``-- needs: clock json ...`` on the
  first line), and an operation may decide its common case early: a later line
  ``-- then needs: ...`` places more libraries there, defined only when that line is reached.

Either way one operation is one atomic server-side step. An operation's text reads its
arguments from ``ARGV`` and returns its reply: in the library, ``ARGV`` is set per call. Every
operation takes ``ARGV[1]`` = the key prefix, ``ARGV[2]`` = now (µs, or "" for the server's
clock), then its own positional arguments: scalars as they are, a structured value (a list or
a map) as one JSON argument. A long operation reads as a sequence of named steps, local
functions of the library it belongs to (``permits.lua``, ``locks.lua``, ...).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

# the order they may depend on each other in
LIBRARIES = ("clock", "restart", "json", "limiter", "slots", "bucket", "admit", "arbiter",
             "adaptive",
             "permits", "queue", "registry", "ownership", "locks")
_NEEDS, _THEN = "-- needs:", "-- then needs:"


def _folder() -> Traversable:
    return resources.files("cross_instance.stores.redis") / "lua"


def _read(name: str) -> str:
    return (_folder() / f"{name}.lua").read_text(encoding="utf-8")


def _libraries(name: str, line: str, marker: str) -> str:
    needs = line.removeprefix(marker).split()
    unknown = set(needs) - set(LIBRARIES)
    if unknown:
        raise ValueError(f"{name}.lua needs unknown libraries {sorted(unknown)}")
    return "\n".join(_read(lib) for lib in LIBRARIES if lib in needs)


@cache
def source(name: str) -> str:
    """The script of operation ``name`` (``<name>.lua``) with its libraries in place."""
    out = []
    for i, line in enumerate(_read(name).split("\n")):
        if (i == 0 and line.startswith(_NEEDS)) or line.startswith(_THEN):
            out.append(_libraries(name, line, _THEN if i else _NEEDS))
        out.append(line)
    return "\n".join(out)


@cache
def digest(name: str) -> str:
    """The digest ``EVALSHA`` calls operation ``name``'s script by."""
    return hashlib.sha1(source(name).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Library:
    """A function library: ``text`` for ``FUNCTION LOAD``, and the function of each
    operation."""

    name: str
    text: str
    functions: dict[str, str]


@cache
def library(operations: tuple[str, ...]) -> Library:
    """Every library once, then each operation as a function of its own."""
    body = ["local ARGV  -- the arguments of the call being run (one at a time)"]
    body += [_read(lib) for lib in LIBRARIES]
    for op in operations:
        body.append(f"local function op_{op}()\n{_read(op)}\nend")
    digest = hashlib.sha1("\n".join(body).encode("utf-8")).hexdigest()[:16]
    name = f"pi_xi_{digest}"
    functions = {op: f"{name}_{op}" for op in operations}
    for op, fn in functions.items():
        body.append(f"redis.register_function('{fn}', function(_, args)\n"
                    f"  ARGV = args\n  return op_{op}()\nend)")
    return Library(name, "\n".join([f"#!lua name={name}", *body]), functions)
