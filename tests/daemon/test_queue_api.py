"""The shared work queue over the public HTTP API, on a real socket: what a worker in any
language sees (put, take, renew, complete, fail, steal, the views), fenced settling as a 409
``task_lost``, and bad input as a 400 naming the field, never a 500."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from cross_instance.errors import InvalidArgument
from cross_instance.stores.sqlite.store import SqliteStore
from tests.daemon.served_app import served_app


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    with served_app(SqliteStore(tmp_path / "daemon-state")) as run, \
            httpx.Client(base_url=run.base, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One daemon for the bad-input cases (each must leave it as it found it), with "w1"."""
    store = SqliteStore(tmp_path_factory.mktemp("queue-api") / "daemon-state")
    with served_app(store) as run, httpx.Client(base_url=run.base, timeout=30) as c:
        register(c, "w1")
        yield c


def post(c: httpx.Client, path: str, body: Any = None, raw: bytes | None = None,
         request_id: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if request_id is not None:
        headers["X-Pi-Request-Id"] = request_id
    r = c.post(path, content=raw if raw is not None else json.dumps(body), headers=headers)
    return r.status_code, r.json()


def register(c: httpx.Client, *ids: str) -> None:
    for i in ids:
        status, data = post(c, "/v1/instances/register", {"instanceId": i, "leaseMs": 60_000})
        assert status == 200, data


def put(c: httpx.Client, owner: str, task_id: str | None = None, **more: Any) -> dict[str, Any]:
    body = {"instanceId": owner, "payload": {"n": task_id}, **more}
    if task_id is not None:
        body["taskId"] = task_id
    status, data = post(c, "/v1/queue/put", body)
    assert status == 200, data
    return data["task"]  # type: ignore[no-any-return]


def test_put_take_complete_and_the_views(client: httpx.Client) -> None:
    c = client
    register(c, "w1")
    first = put(c, "w1", "job/1 a", toolName="grep", payload={"q": ["x", 1, None]})
    assert (first["taskId"], first["owner"], first["toolName"], first["state"]) == \
        ("job/1 a", "w1", "grep", "queued")
    assert first["payload"] == {"q": ["x", 1, None]} and first["fence"] == 0
    assert (first["attempts"], first["maxAttempts"], first["result"], first["error"]) == \
        (0, 3, None, None)
    assert first["enqueuedAt"] > 0 and first["leaseUntilNs"] is None
    assert put(c, "w1", "job/1 a", priority=9)["priority"] == 0  # a resent put: the same task
    urgent = put(c, "w1", priority=5, payload="text")
    assert len(urgent["taskId"]) == 32  # made by the daemon
    # without a taskId, the same request id is the same put
    one = post(c, "/v1/queue/put", {"instanceId": "w1", "payload": []}, request_id="put-1")
    assert post(c, "/v1/queue/put", {"instanceId": "w1", "payload": []}, request_id="put-1") == one
    status, data = post(c, "/v1/queue/take", {"instanceId": "w1", "leaseMs": 60_000})
    run = data["task"]
    assert status == 200 and run["taskId"] == urgent["taskId"] and run["payload"] == "text"
    assert (run["state"], run["attempts"], run["fence"]) == ("running", 1, 1)
    assert run["leaseUntilNs"] > 0
    status, data = post(c, "/v1/queue/renew", {"taskId": run["taskId"], "fence": 1,
                                               "leaseMs": 120_000})
    assert status == 200 and data["task"]["leaseUntilNs"] > run["leaseUntilNs"]
    done = {"taskId": run["taskId"], "fence": 1, "result": {"lines": 3}}
    status, data = post(c, "/v1/queue/complete", done)
    assert status == 200 and data["task"]["state"] == "done"
    assert data["task"]["result"] == {"lines": 3}
    assert post(c, "/v1/queue/complete", done) == (status, data)  # sent again: the same
    listed = c.get("/v1/queue/tasks", params={"state": "done"}).json()["tasks"]
    assert [t["taskId"] for t in listed] == [run["taskId"]]
    queued = c.get("/v1/queue/tasks", params={"owner": "w1", "state": "queued"}).json()
    assert [t["taskId"] for t in queued["tasks"]] == ["job/1 a", one[1]["task"]["taskId"]]
    assert len(c.get("/v1/queue/tasks", params={"limit": 2}).json()["tasks"]) == 2
    assert c.get("/v1/queue/tasks", params={"owner": ""}).json() == {"tasks": []}  # the pool
    got = c.get(f"/v1/queue/tasks/{quote('job/1 a', safe='')}")
    assert got.status_code == 200 and got.json()["task"] == first
    missing = c.get("/v1/queue/tasks/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    # an instance that is not registered may not queue or take
    for path in ("/v1/queue/put", "/v1/queue/take"):
        status, err = post(c, path, {"instanceId": "ghost", "payload": 1} if path.endswith(
            "put") else {"instanceId": "ghost"})
        assert (status, err["code"]) == (404, "not_registered"), err


def test_a_run_that_lost_its_task_is_refused_with_task_lost(client: httpx.Client) -> None:
    c = client
    register(c, "w1")
    put(c, "w1", "t", maxAttempts=2)
    run = post(c, "/v1/queue/take", {"instanceId": "w1", "leaseMs": 1})[1]["task"]
    time.sleep(0.05)  # its 1 ms lease ran out
    status, err = post(c, "/v1/queue/renew", {"taskId": "t", "fence": run["fence"]})
    assert (status, err["code"], err["taskId"], err["fence"]) == (409, "task_lost", "t", 1)
    assert err["retryable"] is False and "lease ran out" in err["reason"]
    again = post(c, "/v1/queue/take", {"instanceId": "w1"})[1]["task"]
    assert (again["taskId"], again["attempts"]) == ("t", 2) and again["fence"] > run["fence"]
    status, err = post(c, "/v1/queue/complete", {"taskId": "t", "fence": run["fence"],
                                                 "result": "late"})
    assert (status, err["code"]) == (409, "task_lost")
    assert "another run" in err["reason"] and "'t'" in err["message"]
    status, data = post(c, "/v1/queue/fail", {"taskId": "t", "fence": again["fence"],
                                              "error": {"why": "boom"}, "retry": True})
    failed = data["task"]  # its last attempt: failed, not queued again
    assert status == 200 and (failed["state"], failed["error"]) == ("failed", {"why": "boom"})
    status, err = post(c, "/v1/queue/renew", {"taskId": "t", "fence": again["fence"]})
    assert (status, err["code"]) == (409, "task_lost") and "settled" in err["reason"]
    status, err = post(c, "/v1/queue/complete", {"taskId": "none", "fence": 1})
    assert (status, err["code"], err["reason"]) == (409, "task_lost", "no such task")


def test_a_retry_goes_back_to_the_queue(client: httpx.Client) -> None:
    c = client
    register(c, "w1")
    put(c, "w1", "t")
    run = post(c, "/v1/queue/take", {"instanceId": "w1"})[1]["task"]
    status, data = post(c, "/v1/queue/fail", {"taskId": "t", "fence": run["fence"],
                                              "error": "flaky", "retry": True})
    assert status == 200 and (data["task"]["state"], data["task"]["error"]) == \
        ("queued", "flaky")
    status, data = post(c, "/v1/queue/fail", {"taskId": "t", "fence": 2, "error": None})
    assert (status, data["code"]) == (409, "task_lost")  # queued: no run holds fence 2


def test_steal_moves_a_queued_task_from_the_busiest_and_the_stats_count_it(
        client: httpx.Client) -> None:
    c = client
    register(c, "busy", "calm", "thief")
    for i in range(4):
        put(c, "busy", f"b{i}", priority=1 if i == 2 else 0)
    put(c, "calm", "c0")
    running = post(c, "/v1/queue/take", {"instanceId": "busy"})[1]["task"]
    assert running["taskId"] == "b2"
    status, data = post(c, "/v1/queue/steal", {"instanceId": "thief", "minQueued": 2})
    stolen = data["task"]
    assert status == 200 and (stolen["taskId"], stolen["owner"], stolen["state"]) == \
        ("b0", "thief", "running")
    # busy holds 2 queued now, not more than 2: nothing to steal; a running task never
    assert post(c, "/v1/queue/steal", {"instanceId": "thief"}) == (200, {"task": None})
    assert c.get("/v1/queue/tasks/b2").json()["task"]["owner"] == "busy"
    post(c, "/v1/queue/complete", {"taskId": "b0", "fence": stolen["fence"], "result": 1})
    stats = c.get("/v1/queue/stats").json()
    counts = {s["instanceId"]: s for s in stats["instances"]}
    assert (counts["busy"]["queued"], counts["busy"]["running"]) == (2, 1)
    assert (counts["thief"]["done"], counts["calm"]["queued"]) == (1, 1)
    thief = counts["thief"]["stealing"]
    assert (thief["totalAttempts"], thief["successfulSteals"], thief["failedAttempts"]) == \
        (2, 1, 1)
    assert thief["successRate"] == 0.5 and thief["avgLatencyMs"] >= 0
    assert set(stats["stealing"]) == {"totalAttempts", "successfulSteals", "failedAttempts",
                                      "successRate", "avgLatencyMs"}
    assert stats["stealing"]["totalAttempts"] == 2
    assert post(c, "/v1/queue/stats/reset", {"instanceId": "thief"}) == (200, {"ok": True})
    stats = c.get("/v1/queue/stats").json()
    assert stats["stealing"]["totalAttempts"] == 0
    assert post(c, "/v1/queue/stats/reset", {}) == (200, {"ok": True})


def test_a_take_resent_over_the_store_protocol_starts_one_run(client: httpx.Client) -> None:
    """take and steal are not safe to apply twice: the remote store sends a request id with
    them, and the daemon answers a resent id with the first reply."""
    c = client
    register(c, "w1")
    put(c, "w1", "t1")
    put(c, "w1", "t2")
    args = {"instance_id": "w1", "lease_ns": 10**10}
    first = post(c, "/v1/store/take_task", args, request_id="take-1")
    assert first[0] == 200 and first[1]["result"]["task_id"] == "t1"
    assert post(c, "/v1/store/take_task", args, request_id="take-1") == first
    second = post(c, "/v1/store/take_task", args, request_id="take-2")
    assert second[1]["result"]["task_id"] == "t2"
    assert c.get("/v1/queue/tasks/t1").json()["task"]["attempts"] == 1


NAN_PAYLOAD = b'{"instanceId": "w1", "payload": [1, NaN]}'
SURROGATE = b'{"instanceId": "w1", "payload": {"k": "\\ud800"}}'
DEEP = (b'{"instanceId": "w1", "payload": ' + b"[" * 150 + b"]" * 150 + b"}")


@pytest.mark.parametrize("path, body, field", [
    ("put", {"instanceId": "w1", "payload": 1, "priority": "high"}, "priority"),
    ("put", {"instanceId": "w1", "payload": 1, "priority": 5000}, "priority"),
    ("put", {"instanceId": "w1", "payload": 1, "priority": True}, "priority"),
    ("put", {"instanceId": "w1", "payload": 1, "maxAttempts": 0}, "maxAttempts"),
    ("put", {"instanceId": "w1", "payload": 1, "taskId": ""}, "taskId"),
    ("put", {"instanceId": "w1", "payload": 1, "taskId": "a\x00b"}, "taskId"),
    ("put", {"instanceId": "w1", "payload": 1, "toolName": 7}, "toolName"),
    ("put", {"instanceId": "w1", "payload": 2**64}, "payload"),
    ("put", {"instanceId": "w1"}, "payload"),
    ("put", {"instanceId": "w1", "payload": 1, "bogus": 1}, "bogus"),
    ("put", NAN_PAYLOAD, "payload"),
    ("put", SURROGATE, "payload"),
    ("put", DEEP, "payload"),
    ("take", {"instanceId": "w1", "leaseMs": 0}, "leaseMs"),
    ("take", {"instanceId": 5}, "instanceId"),
    ("steal", {"instanceId": "w1", "minQueued": -1}, "minQueued"),
    ("renew", {"taskId": "t", "fence": -1}, "fence"),
    ("renew", {"taskId": "t", "fence": 2**63}, "fence"),
    ("renew", {"taskId": "t", "fence": "1"}, "fence"),
    ("complete", {"taskId": "t", "fence": 1, "result": float("inf")}, "result"),
    ("fail", {"taskId": "t", "fence": 1, "error": "x", "retry": "yes"}, "retry"),
    ("fail", {"taskId": "t", "fence": 1, "error": [2**70]}, "error"),
])
def test_bad_input_is_a_400_naming_the_field(shared: httpx.Client, path: str, body: Any,
                                             field: str) -> None:
    c = shared
    # json.dumps writes an infinity as Infinity, as a careless client may
    status, err = post(c, f"/v1/queue/{path}", **(
        {"raw": body} if isinstance(body, bytes) else {"body": body}))
    assert status == 400 and err["code"] in ("invalid_request", "invalid_argument"), err
    assert field in err["message"], err
    assert c.get("/v1/queue/tasks").json() == {"tasks": []}  # nothing was queued


@pytest.mark.parametrize("params, field", [
    ({"state": "lost"}, "state"), ({"limit": "0"}, "limit"), ({"limit": "100001"}, "limit"),
    ({"limit": "many"}, "limit")])
def test_bad_list_filters_are_a_400_naming_them(shared: httpx.Client, params: dict[str, str],
                                                field: str) -> None:
    r = shared.get("/v1/queue/tasks", params=params)
    assert r.status_code == 400 and r.json()["code"] == "invalid_request", r.text
    assert field in r.json()["message"]


def test_any_task_id_is_read_back_by_its_path_and_bytes_that_are_not_utf8_are_refused(
        client: httpx.Client) -> None:
    register(client, "w1")
    ids = ["line\nbreak", "tab\there", "cr\rlf\r\n", "a/b/../c", "emoji 🎉", "\u2028", "%41",
           "?x=1#y", "\ufffd"]
    for task_id in ids:
        put(client, "w1", task_id)
    for task_id in ids:
        got = client.get(f"/v1/queue/tasks/{quote(task_id, safe='')}")
        assert got.status_code == 200 and got.json()["task"]["taskId"] == task_id, task_id
    # decoded with U+FFFD for each bad byte, %FF would name the task "\ufffd": refused instead
    for path in ("/v1/queue/tasks/%FF", "/v1/queue/tasks/%ED%A0%80",
                 "/v1/queue/tasks?owner=%FF", "/v1/queue/tasks?owner=%ED%A0%80",
                 "/v1/instances?x=%C3"):
        r = client.get(path)
        assert r.status_code == 400 and r.json()["code"] == "invalid_request", (path, r.text)
        assert "not UTF-8" in r.json()["message"]


def test_a_1mib_payload_fits_however_its_client_escapes_it(client: httpx.Client) -> None:
    """The largest payload (1 MiB of JSON as UTF-8) sent with every character escaped as
    ``\\uXXXX``: 3 times its UTF-8 size for "é" or an emoji (``json.dumps``'s default), 6
    times for "<" (as Go's encoder writes it)."""
    register(client, "w1")
    for name, char in (("accents", "é"), ("emoji", "😀"), ("angles", "<")):
        n = ((1 << 20) - 2) // len(char.encode())  # as UTF-8 JSON: just under 1 MiB
        body = f'{{"instanceId":"w1","taskId":"{name}","payload":"{_escaped(char) * n}"}}'
        assert len(body) > 3 * (1 << 20)
        status, data = post(client, "/v1/queue/put", raw=body.encode())
        assert status == 200 and data["task"]["payload"] == char * n, (name, status)


def _escaped(char: str) -> str:
    """``char`` as JSON escapes only (a surrogate pair beyond U+FFFF)."""
    if ord(char) > 0xFFFF:
        v = ord(char) - 0x10000
        return f"\\u{0xD800 + (v >> 10):04x}\\u{0xDC00 + (v & 0x3FF):04x}"
    return f"\\u{ord(char):04x}"


def test_a_task_holding_text_no_strict_reader_takes_back_is_still_shown_as_json(
        tmp_path: Path) -> None:
    """Every store refuses NaN as a Python process's put, as the daemon does; a task holding
    such text anyway (written by an older version) is shown with the text as a string."""
    store = SqliteStore(tmp_path / "daemon-state")
    from tests.conftest import record

    store.register_instance(record("py", lease_s=60))
    with pytest.raises(InvalidArgument, match="payload"):
        store.put_task("py", "odd", "", 0, "[NaN]", 3)
    store.put_task("py", "odd", "", 0, "[1]", 3)
    store.db.write(lambda c, now: c.execute("UPDATE tasks SET payload='[NaN]'"))
    with served_app(store) as run, httpx.Client(base_url=run.base, timeout=30) as c:
        r = c.get("/v1/queue/tasks/odd")
        assert r.status_code == 200 and r.json()["task"]["payload"] == "[NaN]"
        assert c.get("/v1/queue/tasks").json()["tasks"][0]["payload"] == "[NaN]"
