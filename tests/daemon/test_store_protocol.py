"""The store protocol's quick path (one-step parse and check of a body without escapes) gives
exactly what the careful path gives, and is really taken for the permit path's requests."""

from __future__ import annotations

import json

from cross_instance.core.keys import plan_request
from cross_instance.core.limits import ProviderLimits, resolve_limits
from cross_instance.daemon.store_routes import decode_args, quick_args
from cross_instance.stores.remote.ops import OPS
from cross_instance.stores.remote.store import _request_json


def test_a_decide_body_takes_the_quick_path_and_decodes_as_the_careful_one():
    limits = resolve_limits(ProviderLimits(600, 20, tokens_per_minute=10_000), "openai",
                            "gpt-4o")
    request = plan_request("agent 1", limits, 1200, 6).request
    body = (f'{{"request":{_request_json(request)},"ticket":42,"queue":true,'
            f'"release":[7,8]}}').encode()
    quick = quick_args(OPS["decide"], body)
    assert quick is not None  # taken: no escapes, nothing wrong
    assert quick == decode_args(OPS["decide"], json.loads(body), False)
    assert quick["request"] == request


def test_anything_wrong_falls_back_to_the_careful_path_that_names_it():
    op = OPS["decide"]
    for body in (b'{"ticket": 1}', b'{"request": {}, "ticket": 1, "queue": true, "release": [],'
                 b' "extra": 1}', b"[1]", b"not json"):
        assert quick_args(op, body) is None
    # a rate bucket that is not a key: refused by both
    bad = {"request": {"instance_id": "a", "provider": "p", "model": None,
                       "rates": [["not a key", 1]], "slots": [], "tokens": 0,
                       "reports": False}, "ticket": 1, "queue": True, "release": []}
    assert quick_args(op, json.dumps(bad).encode()) is None


def test_leaving_a_queue_is_tried_briefly_once_the_daemon_is_away(tmp_path):
    """A wait that failed because the daemon is away leaves its queue with a short bound, so
    the caller hears of the daemon once (one bound), not twice."""
    from cross_instance.errors import StoreUnavailable
    from cross_instance.stores.remote import store as remote
    from cross_instance.stores.sqlite.store import SqliteStore
    from tests.conftest import serve_store

    with serve_store(SqliteStore(tmp_path / "s")) as addr:
        client = remote.RemoteStore(addr, unavailable_after=0.2)
    bounds: list[tuple[str, float | None]] = []
    exchange = client._exchange

    def spy(method: str, path: str, body: bytes | None, request_id: str | None,
            bound: float | None = None) -> object:
        bounds.append((path, bound))
        return exchange(method, path, body, request_id, bound)

    client._exchange = spy  # type: ignore[method-assign]
    for call in (lambda: client.acquire_lock("r", "i", 10**9, 7, True),
                 lambda: client.cancel_lock_wait(7), lambda: client.cancel_wait(7)):
        try:
            call()
        except StoreUnavailable:
            pass
        else:
            raise AssertionError("the daemon is gone")
    assert bounds == [("/v1/store/acquire_lock", None),
                      ("/v1/store/cancel_lock_wait", remote.CLEANUP_BOUND_S),
                      ("/v1/store/cancel_wait", remote.CLEANUP_BOUND_S)]


def test_a_group_limit_under_a_buckets_key_is_refused(tmp_path):
    """Found by the store-operation fuzz: a slot group's limit published under a rate bucket's
    key became that bucket's burst of 0, and every later status read failed."""
    import httpx

    from cross_instance.stores.sqlite.store import SqliteStore
    from tests.conftest import serve_store

    with serve_store(SqliteStore(tmp_path / "s")) as addr, \
            httpx.Client(base_url=f"http://{addr}") as c:
        c.post("/v1/instances/register", json={"instanceId": "a"}).raise_for_status()
        for rates, groups in (({}, {"r:p": 2}), ({"g:*": {"per_minute": 5, "burst": 1}}, {})):
            r = c.post("/v1/store/publish_limits", json={
                "instance_id": "a", "rates": rates, "groups": groups})
            assert r.status_code == 400 and "key" in r.json()["message"], r.text
        assert c.get("/v1/status").status_code == 200
