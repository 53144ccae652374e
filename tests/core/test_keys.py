"""``core.keys``: every bucket and slot group name is built and taken apart in one place.

Keys were built by hand in the status view, the feedback loop and the stores (a permit
without a model once produced ``m:x/None``). The property: any provider name the API accepts
and any model text (slashes and colons included) survive a round trip, each kind stays its
own, and a string that no builder makes is refused by name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cross_instance.core.arbiter import GLOBAL_GROUP
from cross_instance.core.keys import (
    MODEL_SLOTS,
    PROVIDER_NAME,
    PROVIDER_SLOTS,
    REQUESTS,
    TOKENS,
    is_bucket,
    is_requests,
    is_tokens,
    model_group,
    parse_key,
    permit_groups,
    provider_group,
    requests_bucket,
    tokens_bucket,
)

providers = st.from_regex(PROVIDER_NAME, fullmatch=True)
models = st.text(min_size=1, max_size=40)


@given(provider=providers, model=st.none() | models)
def test_buckets_round_trip(provider: str, model: str | None) -> None:
    for build, kind in ((requests_bucket, REQUESTS), (tokens_bucket, TOKENS)):
        key = parse_key(build(provider, model))
        assert (key.kind, key.provider, key.model) == (kind, provider, model)
        assert key.target == (provider if model is None else f"{provider}/{model}")
    assert is_requests(requests_bucket(provider, model)) and is_bucket(tokens_bucket(provider))
    assert is_tokens(tokens_bucket(provider, model)) and not is_tokens(requests_bucket(provider))


@given(provider=providers, model=models)
def test_slot_groups_round_trip(provider: str, model: str) -> None:
    assert parse_key(provider_group(provider)) == parse_key(f"p:{provider}")
    assert parse_key(provider_group(provider)).kind == PROVIDER_SLOTS
    key = parse_key(model_group(provider, model))
    assert (key.kind, key.provider, key.model) == (MODEL_SLOTS, provider, model)
    assert not is_bucket(model_group(provider, model))
    assert parse_key(GLOBAL_GROUP).kind == GLOBAL_GROUP
    assert permit_groups(provider, None) == (GLOBAL_GROUP, provider_group(provider))
    assert permit_groups(provider, model)[-1] == model_group(provider, model)


@pytest.mark.parametrize("junk", ["", "r", "r:", "x:openai", "m:openai", ":openai", "openai"])
def test_a_string_no_builder_makes_is_refused_by_name(junk: str) -> None:
    with pytest.raises(ValueError, match="not a bucket or slot group key"):
        parse_key(junk)
