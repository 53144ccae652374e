"""Checks for the plain values public calls take (flags, counts, timeouts, status codes), pure.

Promise: a bad argument is refused before anything is taken or written, with the error type
of the call's domain (``PermitRequestError``, ``LockRequestError``, ``WorkflowRequestError``,
or ``InvalidArgument`` for the rest). Each of them is a ``ValueError`` and a ``TypeError``, and
its message names the parameter and shows what was given, as ``show`` prints it (truncated).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from cross_instance.errors import InvalidArgument

ErrorType = type[InvalidArgument]


def is_unicode(text: str) -> bool:
    """Whether ``text`` is Unicode every store can keep: no lone surrogate (what
    ``os.fsdecode`` makes of a file name that was not UTF-8)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def show(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (an argument may be megabytes long)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr that raises is still a value we must name
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _refuse(error: ErrorType, name: str, wanted: str, value: object) -> InvalidArgument:
    return error(f"{name} must be {wanted} (got {show(value)})")


def check_bool(name: str, value: object, error: ErrorType = InvalidArgument) -> bool:
    if not isinstance(value, bool):
        raise _refuse(error, name, "True or False", value)
    return value


def check_int(name: str, value: object, minimum: int = 0, error: ErrorType = InvalidArgument,
              maximum: int | None = None) -> int:
    """An ``int`` (not a bool) in ``[minimum, maximum]``."""
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (maximum is not None and value > maximum)):
        upto = "" if maximum is None else f" and <= {maximum}"
        raise _refuse(error, name, f"an integer >= {minimum}{upto}", value)
    return value


def check_seconds(name: str, value: object, error: ErrorType = InvalidArgument,
                  allow_none: bool = True, unit: str = "seconds") -> float | None:
    """A number (of ``unit``) >= 0 (``math.inf`` allowed: no bound), or None when allowed."""
    if value is None and allow_none:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value)
            or value < 0):
        wanted = f"a number of {unit} >= 0" + (" or None" if allow_none else "")
        raise _refuse(error, name, wanted, value)
    return float(value)


def check_cancel(value: object, error: ErrorType = InvalidArgument) -> Any:
    """None or an event-like object (``threading.Event``: ``is_set()`` and ``wait()``)."""
    if value is not None and not (callable(getattr(value, "is_set", None))
                                  and callable(getattr(value, "wait", None))):
        raise _refuse(error, "cancel", "a threading.Event or None", value)
    return value


def check_name(name: str, value: object, error: ErrorType = InvalidArgument,
               limit: int = 256) -> str:
    """Non-empty text of at most ``limit`` characters without control characters."""
    if (not isinstance(value, str) or not value or len(value) > limit
            or any(ord(c) < 32 or ord(c) == 127 for c in value)):
        raise _refuse(error, name, f"a non-empty string of at most {limit} characters "
                      "without control characters", value)
    return value


def check_report(status: object, headers: object, body: object, error: object,
                 usage_tokens: object, refuse: ErrorType = InvalidArgument) -> None:
    """The arguments of ``Permit.report`` / ``Runtime.areport``. The *content* of headers and
    bodies is the provider's and is never refused (malformed values are ignored); their
    types are the caller's."""
    if status is not None:
        check_int("status", status, 0, refuse, 999)
    if headers is not None and (isinstance(headers, str | bytes)
                                or not isinstance(headers, Mapping | Iterable)):
        raise _refuse(refuse, "headers", "a mapping of header names to values, a list of "
                      "(name, value) pairs, or None", headers)
    if body is not None and not isinstance(body, str | bytes):
        raise _refuse(refuse, "body", "str, bytes or None", body)
    if error is not None and not isinstance(error, BaseException):
        raise _refuse(refuse, "error", "the exception the call raised, or None", error)
    if usage_tokens is not None:
        check_int("usage_tokens", usage_tokens, 0, refuse)
