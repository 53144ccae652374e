"""A call whose reply was lost is sent again as it was (redis-py's retry does): the second
run of the same script with the same arguments must not queue or grant a second time
(issue 14, item 8). Here every operation runs twice and the caller sees the second reply."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cross_instance.core.limiter import RateSpec
from cross_instance.core.locking import LockRecord, LockWaiting
from cross_instance.core.records import Granted, PermitRequest, Waiting
from cross_instance.stores.redis.store import RedisStore
from tests.conftest import record, redis_prefix

SEC = 1_000_000_000


def req(iid: str) -> PermitRequest:
    return PermitRequest(iid, "p", None, (("r:p", 1),), ("*",))


@pytest.fixture(params=["", "&lua=scripts"])
def stores(request: Any, shared_redis: Any) -> Iterator[tuple[RedisStore, RedisStore]]:
    """The same state twice: ``lossy`` runs every call twice (its first reply lost),
    ``plain`` once."""
    with redis_prefix("pi-resend", request.param) as url:
        lossy, plain = RedisStore(url), RedisStore(url)
        run: Callable[..., Any] = lossy._lane.run

        def twice(name: str, *args: Any) -> Any:
            run(name, *args)
            return run(name, *args)

        lossy._lane.run = twice  # type: ignore[method-assign]
        for s, iid in ((plain, "a"), (lossy, "b"), (plain, "c")):
            s.register_instance(record(iid, lease_s=600))
            s.publish_limits(iid, {"r:p": RateSpec(6000, 100)}, {"*": 1})
        yield lossy, plain
        lossy.close()
        plain.close()


def test_a_permit_request_resent_queues_once_and_grants_once(stores):
    lossy, plain = stores
    held = plain.acquire(req("a"), None)
    waiting = lossy.acquire(req("b"), None)  # the first attempt of a wait, as the runtime's
    assert isinstance(waiting, Waiting)
    assert plain.snapshot().waiting == 1  # one entry, not two
    behind = plain.acquire(req("c"), None)
    assert isinstance(behind, Waiting) and behind.ahead == 1
    plain.release("a", [held.permit_id])
    got = lossy.acquire(req("b"), waiting.ticket)
    assert isinstance(got, Granted)
    snap = plain.snapshot()
    assert [p.instance_id for p in snap.permits] == ["b"] and snap.groups[0].used == 1
    assert lossy.release("b", [got.permit_id]) == 0  # sent twice: the second frees nothing
    assert plain.snapshot().permits == ()
    nxt = plain.acquire(req("c"), behind.ticket)  # no second entry of b's ahead of c
    assert isinstance(nxt, Granted)
    plain.release("c", [nxt.permit_id])
    one = lossy.try_acquire(req("b"))  # never queues; sent twice, granted once
    assert isinstance(one, Granted) and len(plain.snapshot().permits) == 1


def test_a_lock_request_resent_queues_once_and_grants_once(stores):
    lossy, plain = stores
    held = plain.acquire_lock("res", "a", 60 * SEC, None, False)
    waiting = lossy.acquire_lock("res", "b", 60 * SEC, None, True)
    assert isinstance(waiting, LockWaiting)
    behind = plain.acquire_lock("res", "c", 60 * SEC, None, True)
    plain.release_lock("res", held.lock_id)
    got = lossy.acquire_lock("res", "b", 60 * SEC, waiting.ticket, True)
    assert isinstance(got, LockRecord) and got.token == held.token + 1
    assert [x.lock_id for x in plain.list_locks()] == [got.lock_id]
    assert lossy.release_lock("res", got.lock_id)  # run twice: the second says the same
    assert plain.list_locks() == []
    # no second entry of b's is left ahead of c
    nxt = plain.acquire_lock("res", "c", 60 * SEC, behind.ticket, True)
    assert isinstance(nxt, LockRecord) and nxt.token == got.token + 1
    plain.release_lock("res", nxt.lock_id)
    first = lossy.acquire_lock("res", "b", 60 * SEC, None, False)  # try: granted once
    assert isinstance(first, LockRecord) and first.token == nxt.token + 1
    assert [x.lock_id for x in plain.list_locks()] == [first.lock_id]
