"""The store's Lua as one function library (FCALL) where the server allows it, and as scripts
(EVALSHA) where it does not: loaded again when the server loses it, announced when refused."""

from __future__ import annotations

import redis

from cross_instance.core.limiter import RateSpec
from cross_instance.core.records import Granted, PermitRequest
from cross_instance.stores.redis.store import RedisStore
from tests.conftest import record, redis_prefix
from tests.redis.private_server import private_redis

REQ = PermitRequest("a", "p", None, (("r:p", 1),), ("*",))


def _ready(store: RedisStore) -> RedisStore:
    store.register_instance(record("a"))
    store.publish_limits("a", {"r:p": RateSpec(6000, 100)}, {"*": 2})
    return store


def test_one_library_named_by_its_digest_and_loaded_again_when_lost(tmp_path):
    with private_redis(tmp_path) as port:
        store = _ready(RedisStore(f"redis://127.0.0.1:{port}/0"))
        library = store._lane.library
        assert library is not None and store._lane.fallback is None
        admin = redis.Redis(port=port)
        names = [dict(zip(e[::2], e[1::2], strict=False))[b"library_name"].decode()
                 for e in admin.function_list()]
        assert names == [library.name] and library.name.startswith("pi_xi_")
        first = store.acquire(REQ, None)
        assert isinstance(first, Granted)
        admin.function_flush()  # as a restart or an operator would
        second = store.acquire(REQ, None, release=[first.permit_id])
        assert isinstance(second, Granted)
        assert [p.permit_id for p in store.snapshot().permits] == [second.permit_id]
        assert store._lane.library is library  # still functions, loaded again
        store.close()
        admin.close()


def test_scripts_when_the_account_may_not_load_functions(tmp_path):
    with private_redis(tmp_path, declare=False) as port:
        admin = redis.Redis(port=port)
        admin.acl_setuser("agent", enabled=True, passwords=["+s3cret"], keys=["*"],
                          commands=["+@all", "-function"])
        store = RedisStore(f"redis://agent:s3cret@127.0.0.1:{port}/0")
        assert store.declare_empty()  # a new server: no restart grace
        store = _ready(store)
        assert store._lane.library is None and "no permissions" in (store._lane.fallback or "")
        assert any("run as scripts" in w for w in store.warnings)
        held = [store.try_acquire(REQ) for _ in range(3)]
        assert [isinstance(g, Granted) for g in held] == [True, True, False]  # 2 slots
        assert admin.function_list() == []
        store.close()
        admin.close()


def test_scripts_on_request_share_state_with_functions(shared_redis):
    with redis_prefix() as url:
        functions = _ready(RedisStore(url))
        scripts = RedisStore(f"{url}&lua=scripts")
        try:
            assert scripts._lane.library is None and scripts._lane.fallback is None
            assert scripts.warnings == functions.warnings  # asked for: nothing to announce
            one = functions.acquire(REQ, None)
            two = scripts.acquire(REQ, None)
            assert isinstance(one, Granted) and isinstance(two, Granted)
            assert scripts.try_acquire(REQ) is None  # both count against the same 2 slots
            assert scripts.release("a", [one.permit_id]) == 1  # a permit it never saw
            assert isinstance(functions.try_acquire(REQ, release=[two.permit_id]), Granted)
        finally:
            functions.close()
            scripts.close()


def test_a_forked_child_opens_its_own_connections(redis_store):
    import os

    store = _ready(redis_store)
    held = store.acquire(REQ, None)  # the parent's connection is now idle in the lane
    assert isinstance(held, Granted)
    pid = os.fork()
    if pid == 0:  # the child: its own connection, the parent's socket untouched
        try:
            ok = isinstance(store.try_acquire(REQ), Granted)
            conn = store._lane._take()  # and a child killed mid-call leaves nothing behind
            conn.send_command("PING")
            os._exit(0 if ok else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # the parent's connection still answers its own calls in order
    assert store.try_acquire(REQ) is None  # both slots are taken (parent's and child's)
    assert store.release("a", [held.permit_id]) == 1
