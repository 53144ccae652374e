"""The Redis store's lock rules (locks.lua, used by the lock_*.lua operations) are those of
``core.locking`` and the SQLite store on the same state: who may take a resource (free,
expired, holder dead), in what order (first come, first served), with which fencing token, and
who may renew it. A differential property test against the Redis on 127.0.0.1:6379 (the probe
script only computes; no keys)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cross_instance.core.liveness import Verdict
from cross_instance.core.locking import LockRecord, can_renew, my_turn, next_token, why_free
from cross_instance.stores.redis import scripts

NOW = 1_764_000_000_000_000  # µs since the epoch: the magnitude TIME gives
TEXT = st.sampled_from(["a", "b", "a:b", "x\ty", "n\nl", "é", "😀", "p: q\t\n"]) | st.text(
    st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=8)
# tickets as new_ticket makes them (up to 2**62: more digits than a Lua number holds, so the
# scripts keep them as text) and small ones; neighbours differ in the last digit only
TICKETS = st.sampled_from([1, 2, 10, 2**53, 2**53 + 1, 2**62 - 1, 2**62]) | st.integers(1, 2**62)


@pytest.fixture(scope="module")
def probe(shared_redis):
    script = shared_redis.register_script(scripts.source("locks_probe"))
    return lambda query: script(keys=[], args=[json.dumps(query, ensure_ascii=False)])


@st.composite
def states(draw):
    now = NOW + draw(st.integers(-10**9, 10**9))
    ids = draw(st.lists(TEXT, min_size=1, max_size=3, unique=True))
    lock = None
    if draw(st.integers(0, 3)):  # mostly held
        expires = now + draw(st.sampled_from([-1, 0, 1]) | st.integers(-10**8, 10**8))
        token = draw(st.integers(1, 5) | st.integers(NOW, NOW + 5))
        lock = LockRecord(draw(TEXT), draw(st.sampled_from(ids)), draw(TEXT), token,
                          expires - 5_000_000, expires, 0, 0)
    ticket = draw(TICKETS)
    first = draw(st.none() | st.just(ticket) | TICKETS)
    last = lock.token if lock is not None else draw(st.none() | st.integers(1, 5))
    return (lock, now, draw(st.none() | st.sampled_from(Verdict)), first, ticket, last,
            draw(st.just(0) | st.integers(NOW - 10**9, NOW)), draw(st.sampled_from(ids)))


def encode(lock: LockRecord | None, now: int, verdict: Verdict | None, first: int | None,
           ticket: int, last: int | None, floor: int, lock_id: str) -> dict:
    """The state as lock_acquire.lua has it: the lock as load_lock reads it (µs), the tickets as
    text, a resource that never held a token at 0."""
    held = None
    if lock is not None:
        held = {"res": lock.resource, "lock_id": lock.lock_id, "holder": lock.holder,
                "token": lock.token, "acquired": lock.acquired_ns, "expires": lock.expires_ns}
    return {"lock": held, "now": now, "verdict": None if verdict is None else verdict.value,
            "first": None if first is None else str(first), "ticket": str(ticket),
            "last": last or 0, "floor": floor, "lock_id": lock_id}


def ns(lock: LockRecord | None) -> LockRecord | None:
    """The lock (drawn in µs, as the scripts keep it) in the core's ns."""
    if lock is None:
        return None
    return replace(lock, acquired_ns=lock.acquired_ns * 1000, expires_ns=lock.expires_ns * 1000)


def held(expires: int, token: int = 3) -> LockRecord:
    return LockRecord("r\t:é", "id", "holder", token, expires - 1, expires, 0, 0)


@settings(max_examples=800, deadline=None)
@given(states())
@example((held(NOW), NOW, Verdict.ALIVE, None, 5, 3, 0, "id"))  # expires now: expired
@example((held(NOW + 1), NOW, Verdict.ALIVE, None, 5, 3, 0, "id"))  # a µs left: held, renewable
@example((held(NOW + 1), NOW, Verdict.DEAD, None, 5, 3, 0, "id"))  # its holder is dead
@example((held(NOW + 1), NOW, Verdict.UNKNOWN, None, 5, 3, 0, "id"))  # cannot tell: held
@example((held(NOW + 1), NOW, None, None, 5, 3, 0, "id"))  # not judged: held
@example((None, NOW, None, 2**53, 2**53 + 1, None, NOW, "id"))  # another's turn (1 apart)
@example((None, NOW, None, 2**62, 2**62, None, NOW, "id"))  # the caller's turn
@example((None, NOW, None, None, 7, None, 0, "id"))  # the first database: token 1
@example((None, NOW, None, None, 7, 4, NOW, "id"))  # released at token 4: 5, not the floor
def test_lua_lock_rules_match_the_core(probe, state):
    lock, now, verdict, first, ticket, last, floor, lock_id = state
    core = ns(lock)
    reason = why_free(core, now * 1000, verdict)
    got = probe(encode(lock, now, verdict, first, ticket, last, floor, lock_id))
    # reason, whether it is the caller's turn, the next token, whether the floor was asked
    # (floor_of writes: only for a resource's first grant), whether lock_id may renew
    assert got == [reason.encode(), int(my_turn(first, ticket)),
                   next_token(last, floor), int(last is None),
                   int(can_renew(core, lock_id, now * 1000))]
