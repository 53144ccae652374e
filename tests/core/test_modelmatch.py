"""Model-pattern matching: exact first, then most literal characters, independent of order."""

from __future__ import annotations

import random
from fnmatch import fnmatchcase

from hypothesis import given
from hypothesis import strategies as st

from cross_instance.core.modelmatch import (
    best_match,
    is_exact,
    literal_count,
    matches_model_pattern,
    pattern_problem,
    specificity_key,
)

PATTERN_CHARS = st.sampled_from(list("ab-*?[]!"))
patterns = st.text(PATTERN_CHARS, min_size=1, max_size=8)
models = st.text(st.sampled_from(list("ab-[]!*?")), max_size=8)


def test_examples() -> None:
    pats = ["*", "gpt-4*", "gpt-4o*", "gpt-4o", "gpt-4o-mini", "gpt-?o*"]
    assert best_match(pats, "gpt-4o") == "gpt-4o"
    assert best_match(pats, "gpt-4o-mini") == "gpt-4o-mini"
    assert best_match(pats, "gpt-4o-2024-08-06") == "gpt-4o*"
    assert best_match(pats, "gpt-4-turbo") == "gpt-4*"
    assert best_match(pats, "claude-3") == "*"
    assert best_match(["gpt-4*"], "claude-3") is None
    assert best_match([], "x") is None


def test_exact_beats_equally_literal_wildcard() -> None:
    # "gpt-4*" has as many literal characters as "gpt-4" and is longer, yet exact wins.
    assert best_match(["gpt-4*", "gpt-4"], "gpt-4") == "gpt-4"


def test_ties_break_by_length_then_lexicographic() -> None:
    assert best_match(["a*", "a**"], "abc") == "a**"
    assert best_match(["ab*", "a*c"], "abc") == "a*c"  # "*" sorts before "b"


def test_literal_count_reads_classes_like_fnmatch() -> None:
    assert literal_count("gpt-4o") == 6
    assert literal_count("gpt-[34]o*") == 5
    assert literal_count("[!a]b") == 1
    assert literal_count("a[b") == 3  # an unclosed "[" is a literal
    assert literal_count("[]]") == 0  # "]" first in a class is part of it
    assert is_exact("a[b") and not is_exact("a?b")


def test_matching_is_case_sensitive_and_star_crosses_slashes() -> None:
    assert not matches_model_pattern("GPT-4*", "gpt-4o")
    assert matches_model_pattern("openrouter/*", "openrouter/anthropic/claude")


def test_pattern_problem() -> None:
    assert pattern_problem("gpt-4*") is None
    assert pattern_problem("") == "model pattern must not be empty"
    assert pattern_problem("a" * 201) == "model pattern must be at most 200 characters (got 201)"
    assert pattern_problem("a\tb") == "model pattern must not contain control characters"


@given(st.lists(patterns, max_size=6), models, st.randoms())
def test_best_match_is_order_independent_and_most_specific(
    pats: list[str], model: str, rnd: random.Random
) -> None:
    shuffled = list(pats)
    rnd.shuffle(shuffled)
    found = best_match(pats, model)
    assert best_match(shuffled, model) == found
    matching = [p for p in pats if fnmatchcase(model, p)]
    if found is None:
        assert matching == []
    else:
        assert fnmatchcase(model, found)
        assert all(specificity_key(found) <= specificity_key(p) for p in matching)


@given(patterns, models)
def test_literal_count_is_consistent_with_fnmatch(pattern: str, model: str) -> None:
    if fnmatchcase(model, pattern):
        assert literal_count(pattern) <= len(model)
        if is_exact(pattern):
            assert pattern == model


@given(st.lists(patterns, max_size=5), models)
def test_exact_name_always_wins_and_star_always_matches(pats: list[str], model: str) -> None:
    assert best_match([*pats, "*"], model) is not None
    if model and is_exact(model):
        assert best_match([*pats, model], model) == model
