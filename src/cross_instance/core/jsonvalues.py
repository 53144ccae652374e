"""JSON values a store keeps as text (task payloads, results, errors; workflow state): what no
store may keep because not every reader could take it back as it was, and how kept text is
shown again. Pure; one definition for the facade, the stores, the daemon and the CLI."""

from __future__ import annotations

import json
import math
from typing import Any

from cross_instance.errors import InvalidArgument

MAX_DEPTH = 100  # nesting of lists and objects a kept JSON value may have


def unstorable(value: object) -> str | None:
    """What in a JSON value no store can hold and give back as it was (text with a lone
    surrogate, NaN or an infinity, an integer beyond 64 bits), or None. A loop, not a
    recursion: the JSON may be nested deep."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode()
            except UnicodeEncodeError:
                return "text that is not Unicode (a lone surrogate)"
        elif isinstance(item, float) and not math.isfinite(item):
            return "a number that is not finite (NaN or an infinity)"
        elif isinstance(item, int) and not isinstance(item, bool) \
                and not -(2**63) <= item < 2**63:
            return "an integer outside 64 bits"
    return None


def too_deep(value: object) -> bool:
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                return True
            todo.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                 else item))
    return False


def json_problem(value: object) -> str | None:
    """``unstorable``, or nesting deeper than ``MAX_DEPTH``, or None."""
    if too_deep(value):
        return f"nesting deeper than {MAX_DEPTH} levels"
    return unstorable(value)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_text(name: str, text: object, most_bytes: int) -> None:
    """``InvalidArgument`` naming ``name`` unless ``text`` is JSON text of at most
    ``most_bytes`` bytes holding a value every store and reader keeps as it is."""
    if not isinstance(text, str):
        raise InvalidArgument(f"{name} must be JSON text, got {type(text).__name__}")
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(f"{name} must be Unicode text (no lone surrogate)") from None
    if size > most_bytes:
        raise InvalidArgument(f"{name} is {size} bytes as JSON, more than {most_bytes}")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidArgument(f"{name} holds nesting deeper than {MAX_DEPTH} levels") from None
    except ValueError as err:
        raise InvalidArgument(f"{name} is not JSON text: {err}") from None
    wrong = json_problem(value)
    if wrong is not None:
        raise InvalidArgument(f"{name} holds {wrong}")


def to_text(name: str, value: object) -> str:
    """``value`` as the JSON text a store keeps, or ``InvalidArgument`` naming ``name``."""
    wrong = json_problem(value)
    if wrong is not None:
        raise InvalidArgument(f"{name} holds {wrong}")
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InvalidArgument(f"{name} must be a JSON value (got {type(value).__name__}: "
                              f"{err})") from None


def shown(text: str) -> Any:
    """Kept JSON text as its value; text no strict reader could take back (written by an
    older version, say) comes as the text itself, so an answer is always JSON."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return text
    return text if json_problem(value) is not None else value
