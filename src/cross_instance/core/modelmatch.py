"""Model-name glob patterns: matching and most-specific-first selection.

Patterns use :func:`fnmatch.fnmatchcase` syntax (``*``, ``?``, ``[seq]``, ``[!seq]``); matching
is case-sensitive and ``*`` also matches ``/``. All functions are pure.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from fnmatch import fnmatchcase

MAX_PATTERN_LENGTH = 200


def matches_model_pattern(pattern: str, model: str) -> bool:
    """True iff ``model`` matches the glob ``pattern`` (case-sensitive, whole string)."""
    return fnmatchcase(model, pattern)


def literal_count(pattern: str) -> int:
    """Number of characters of ``pattern`` that match only themselves.

    ``*``, ``?`` and a complete ``[...]`` class are wildcards and count 0; an unclosed ``[`` is a
    literal, exactly as :mod:`fnmatch` reads it.
    """
    i, n, count = 0, len(pattern), 0
    while i < n:
        ch = pattern[i]
        i += 1
        if ch in "*?":
            continue
        if ch == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j < n:
                i = j + 1
                continue
        count += 1
    return count


def is_exact(pattern: str) -> bool:
    """True iff ``pattern`` has no wildcard, so it matches exactly one name (itself)."""
    return literal_count(pattern) == len(pattern)


def specificity_key(pattern: str) -> tuple[bool, int, int, str]:
    """Sort key, smallest = most specific: exact first, then most literal characters, then the
    longer pattern, then lexicographic order (so the choice never depends on input order)."""
    return (not is_exact(pattern), -literal_count(pattern), -len(pattern), pattern)


def best_match(patterns: Iterable[str], model: str) -> str | None:
    """The most specific pattern (see :func:`specificity_key`) that matches ``model``, or None."""
    matching = [p for p in patterns if matches_model_pattern(p, model)]
    return min(matching, key=specificity_key) if matching else None


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not an acceptable model pattern, or None if it is."""
    if not pattern:
        return "model pattern must not be empty"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"model pattern must be at most {MAX_PATTERN_LENGTH} characters (got {len(pattern)})"
    if any(unicodedata.category(ch) == "Cc" for ch in pattern):
        return "model pattern must not contain control characters"
    if any(unicodedata.category(ch) == "Cs" for ch in pattern):
        return "model pattern must not contain lone surrogates (not text a store can keep)"
    return None
