"""The Redis store's uncontended acquire (admit.lua: decided before the full path, from a few
reads) grants exactly when the Python store would on the same state, and takes the same: a
differential property test against the Redis on 127.0.0.1:6379 (the probe script only
computes; no keys).

The Python side is the SQLite store's uncontended path (``permits._quick``): the spec each
bucket enforces (``core.adaptive.effective``), a cost above its burst left to the full path,
then ``core.arbiter.fits_now``, which is also what ``core.arbiter.arbitrate`` decides when
nobody is queued and nothing is reserved; a grant then takes each bucket's tokens
(``core.limiter.consume``) and counts them in its minute window (``permits._TAKE``).

Where admit.lua does not answer (somebody queued, capacity reserved, a restart's grace, or no
room), the full path decides; it never answers where the Python store would not grant. Slot
counts are read before the request's own finished permits are freed: those of its kind are
taken off (``same``); those of other kinds are not, so there it may leave a grant to the full
path (``other``: never a grant Python would refuse)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cross_instance.core import adaptive, arbiter, limiter
from cross_instance.core.arbiter import Capacity, Need
from cross_instance.core.limiter import RateSpec
from cross_instance.stores.redis import scripts
from cross_instance.stores.sqlite.permits import _TAKE

US_PER_MINUTE = 60_000_000
NOW = 1_764_000_000_000_000  # µs since the epoch: the magnitude TIME gives
TEXT = st.sampled_from(["a", "a:b", "x\ty", "n\nl", "é", "😀", "p: q\t\n"]) | st.text(
    st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=6)


@pytest.fixture(scope="module")
def probe(shared_redis):
    script = shared_redis.register_script(scripts.source("admit_probe"))
    return lambda query: script(keys=[], args=[json.dumps(query, ensure_ascii=False)])


@pytest.fixture(scope="module")
def take():
    """The SQLite store's grant of one bucket (``permits._TAKE``): new minute counts."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE buckets(key TEXT PRIMARY KEY, per_minute, tat, win, cur, prev)")

    def run(key: str, per_minute: int, win: int, cur: int, prev: int, tat: int, this: int,
            cost: int) -> tuple[int, int]:
        db.execute("DELETE FROM buckets")
        db.execute("INSERT INTO buckets VALUES(?,?,?,?,?,?)",
                   (key, per_minute, 0, win, cur, prev))
        new_cur, new_prev, _ = db.execute(_TAKE, (tat, this, cost, key)).fetchone()
        return new_cur, new_prev

    yield run
    db.close()


@st.composite
def rates(draw, now, key):
    """A request's cost from a bucket, and the bucket's numbers as bucket.lua packs them
    (BUCKET_FIELDS; -1: none): mostly a TAT at or before where the cost just fits, sometimes
    anything; sometimes a learned rate or a cooldown (which may make it not fit)."""
    per_minute, burst = draw(st.integers(1, 6000)), draw(st.integers(1, 12))
    t = -(-US_PER_MINUTE // per_minute)
    if draw(st.integers(0, 3)):
        cost = draw(st.integers(1, burst))
        late = draw(st.sampled_from([0, -1]) | st.integers(-2 * burst * t, 0))
    else:
        cost = draw(st.integers(1, 14))
        late = draw(st.sampled_from([1, t]) | st.integers(-2 * burst * t, 2 * t))
    tat = now + (burst - cost) * t + late
    this = now // US_PER_MINUTE
    win = draw(st.sampled_from([this, this - 1, this - 2, 0]))
    lrate = draw(st.floats(0.5, 2.0 * per_minute)) if not draw(st.integers(0, 3)) else None
    cooldown = 0
    if not draw(st.integers(0, 3)):
        cooldown = draw(st.sampled_from([now - 1, now, now + 1])
                        | st.integers(now - 10**8, now + 10**8))
    return key, cost, [per_minute, burst, tat, win, draw(st.integers(0, 50)),
                       draw(st.integers(0, 50)), -1 if lrate is None else lrate, 0, 0, 0,
                       cooldown, -1, draw(st.integers(0, 1))]


@st.composite
def states(draw):
    now = NOW + draw(st.integers(-10**9, 10**9))
    provider = draw(TEXT)
    keys = draw(st.lists(st.sampled_from(["r:", "t:", ""]).flatmap(
        lambda kind: TEXT.map(lambda name: kind + name)), max_size=3, unique=True))
    needs = [draw(rates(now, k)) for k in keys]
    groups = ["*", "p:" + provider, *draw(st.sampled_from([[], ["m:" + provider + "/m"]]))]
    same, other = draw(st.integers(0, 2)), draw(st.sampled_from([0, 0, 1, 2]))
    # per slot group: its limit (None: none published) and the permits held in it once the
    # request's finished ones are freed
    slots = [(g, draw(st.none() | st.integers(1, 6)), draw(st.integers(0, 4))) for g in groups]
    # waiting, reserving, grace: mostly nobody (the fields absent or 0), else one of them
    gate = [draw(st.sampled_from([None, "0"])), draw(st.sampled_from([None, "0"])), None]
    if not draw(st.integers(0, 3)):
        which = draw(st.integers(0, 2))
        gate[which] = draw(st.sampled_from(["1", "3"] if which < 2 else ["0", str(now)]))
    for g, limit, used in slots:
        before = used + same + (other if g == "*" else 0)
        absent = before == 0 and draw(st.booleans())  # never counted
        gate += [None if limit is None else str(limit), None if absent else str(before)]
    return now, draw(st.booleans()), needs, slots, gate, same, other


def python_grant(now: int, reports: bool, rates: list, slots: list
                 ) -> tuple[bool, list[int], dict]:
    """The SQLite store's uncontended decision (nobody queued, nothing reserved): whether it
    grants, with each bucket's effective TAT, and the same state as arbitrate's Capacity."""
    tats, specs, fits = [], {}, []
    for key, cost, v in rates:
        spec, tat = adaptive.effective(
            RateSpec(int(v[0]), int(v[1]), US_PER_MINUTE), v[2], None if v[6] == -1 else v[6],
            v[10], adaptive.slow_starts(key, reports, bool(v[12])))
        tats.append(tat)
        specs[key] = spec
        fits.append((tat, spec, cost))
    quick = (all(cost <= specs[key].burst for key, cost, _ in rates)
             and arbiter.fits_now(fits, [(used, limit) for _, limit, used in slots], now))
    cap = Capacity({k: tat for (k, _, _), tat in zip(rates, tats, strict=True)}, specs,
                   {g: used for g, _, used in slots},
                   {g: limit for g, limit, _ in slots if limit is not None}, {})
    return quick, tats, cap


def bucket(tat: int, win: int, probed: int = 1) -> list:  # 1000 a minute: 60_000 µs a token
    return [1000, 5, tat, win, 3, 4, -1, 0, 0, 0, 0, -1, probed]


def case(cost: int, v: list, *, used: int = 1, limit: int = 2, same: int = 0, other: int = 0,
         gate: tuple = (None, None, None), reports: bool = False, key: str = "r:p") -> tuple:
    """One bucket and the global slot group, the gate as HMGET reads it."""
    return (NOW, reports, [(key, cost, v)], [("*", limit, used)],
            [*gate, str(limit), str(used + same + other)], same, other)


THIS = NOW // US_PER_MINUTE
FIT = bucket(NOW, THIS)
EDGE = bucket(NOW + 60_000 * 4, THIS - 1)  # exactly one token left, counted a minute ago


@settings(max_examples=500, deadline=None)
@given(states())
@example(case(1, EDGE))  # just fits
@example(case(2, EDGE))  # a token short
@example(case(1, bucket(NOW + 60_000 * 4 + 1, THIS)))  # a µs short
@example(case(6, FIT))  # above the burst
@example(case(2, bucket(NOW, THIS, probed=0), reports=True))  # slow start: a burst of 1
@example(case(1, FIT, same=1))  # the request's own finished permit frees the slot
@example(case(1, FIT, used=2))  # no slot
@example(case(1, FIT, gate=("0", "0", None)))
@example(case(1, FIT, gate=("1", None, None)))  # somebody queued
@example(case(1, FIT, gate=(None, "1", None)))  # capacity reserved
@example(case(1, FIT, gate=(None, None, "0")))  # a restart's grace
@example(case(1, FIT, used=0, limit=1, other=1))  # a freed permit of another kind
def test_lua_uncontended_admit_matches_the_python_store(probe, take, state):
    now, reports, rates, slots, gate, same, other = state
    got = probe({"now": now, "reports": reports, "rates": [list(r) for r in rates],
                 "gate": gate, "same": same})
    quick, tats, cap = python_grant(now, reports, rates, slots)
    if all(cost <= cap.specs[key].burst for key, cost, _ in rates):  # fits_now is arbitrate's
        need = Need("i", tuple((k, c) for k, c, _ in rates), tuple(g for g, _, _ in slots))
        assert arbiter.arbitrate(need, [], cap, now).grant == quick
    if gate[0] not in (None, "0") or gate[1] not in (None, "0") or gate[2] is not None:
        assert got == [0]  # contended: the full path decides
        return
    if other and got == [0]:
        return  # another kind's freed permits still counted: the full path decides
    if not quick:
        assert got == [0]
        return
    expected = [1]
    this = now // US_PER_MINUTE
    for (key, cost, v), tat in zip(rates, tats, strict=True):
        cur, prev = take(key, v[0], v[3], v[4], v[5], tat, this, cost)
        expected.append([limiter.consume(tat, now, cap.specs[key], cost), this, cur, prev])
    assert got == expected
