"""A bucket's state is one packed field on Redis (bucket.lua). A bucket an earlier version of
this package wrote as text fields keeps its state when this version first publishes to it."""

from __future__ import annotations

import pytest

from cross_instance.core.limiter import RateSpec
from cross_instance.stores.redis.store import RedisStore
from tests.conftest import record


@pytest.fixture
def store(redis_store: RedisStore) -> RedisStore:
    return redis_store


def test_a_bucket_written_as_text_fields_keeps_its_state(store, shared_redis):
    key = f"{store.prefix}b:r:p"
    far = 9_000_000_000_000_000  # µs, beyond any test's clock: the TAT and the cooldown hold
    shared_redis.hset(key, mapping={
        "per_minute": 600, "burst": 10, "tat": far, "win": 0, "cur": 0, "prev": 0,
        "lrate": "123.5", "decreased_at": 5, "last_429": 6, "last_increase": 7,
        "cooldown_until": far, "reported_limit": 500, "probed": 1})
    shared_redis.sadd(f"{store.prefix}bkeys", "r:p")
    store.register_instance(record("a"))
    store.publish_limits("a", {"r:p": RateSpec(600, 10)}, {})

    (bucket,) = store.snapshot().buckets
    assert bucket.key == "r:p" and bucket.spec == RateSpec(600, 10)
    assert bucket.tat_ns == far * 1000 and bucket.cooldown_until_ns == far * 1000
    assert bucket.learned_rate == 123.5 and bucket.reported_limit == 500
    assert set(shared_redis.hkeys(key)) == {b"s"}  # the text fields are gone


def test_the_packed_state_round_trips_what_the_snapshot_shows(store, shared_redis):
    store.register_instance(record("a"))
    store.publish_limits("a", {"r:p": RateSpec(6000, 100)}, {})
    (bucket,) = store.snapshot().buckets
    assert bucket.spec == RateSpec(6000, 100) and bucket.learned_rate is None
    assert bucket.reported_limit is None and bucket.cooldown_until_ns == 0
    assert shared_redis.hkeys(f"{store.prefix}b:r:p") == [b"s"]
