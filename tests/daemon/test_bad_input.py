"""Bad input and faults against a live daemon over a real socket (issue 16, "Bad input and
faults"): whatever a client sends, the answer is a 4xx with a JSON error naming a ``code``,
never a 500, and the daemon goes on serving everyone else. A request sent again with the same
``X-Pi-Request-Id`` is applied once.
"""

from __future__ import annotations

import dataclasses
import enum
import http.client
import json
import socket
import threading
import types
import typing
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cross_instance.daemon.state import MAX_BODY
from cross_instance.stores import open_store
from cross_instance.stores.remote.ops import OPS
from tests.conftest import serve_store


@pytest.fixture
def addr(tmp_path: Path) -> Iterator[str]:
    with serve_store(open_store(f"sqlite://{tmp_path / 'state'}")) as where:
        yield where


Reply = tuple[int, Any]


def send(addr: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One request on a connection of its own: status, headers (lower-case) and the body as
    JSON (the raw text when it is not JSON, which no reply of the daemon should be)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        head = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    try:
        return response.status, head, json.loads(data)
    except ValueError:
        return response.status, head, data.decode("utf-8", "replace")


def post(addr: str, path: str, obj: Any = None, *, raw: bytes | None = None,
         request_id: str | None = None) -> Reply:
    body = raw if raw is not None else json.dumps(obj).encode()
    status, _, data = send(addr, "POST", path, body,
                           {"X-Pi-Request-Id": request_id} if request_id is not None else None)
    return status, data


def get(addr: str, path: str) -> Reply:
    status, _, data = send(addr, "GET", path)
    return status, data


def is_json_error(reply: Reply) -> bool:
    status, data = reply
    return (400 <= status < 500 and isinstance(data, dict) and isinstance(data.get("code"), str)
            and bool(data["code"]) and isinstance(data.get("message"), str))


def assert_error(reply: Reply, code: str | None = None, status: int | None = None) -> None:
    assert is_json_error(reply), reply
    if code is not None:
        assert reply[1]["code"] == code, reply
    if status is not None:
        assert reply[0] == status, reply


def not_a_server_error(reply: Reply) -> bool:
    """A 2xx/3xx with JSON, or a 4xx JSON error: anything but a 5xx or a body that is not
    JSON."""
    status, data = reply
    if status >= 400:
        return is_json_error(reply)
    return not isinstance(data, str)


def register(addr: str, instance_id: str | None = None) -> str:
    status, data = post(addr, "/v1/instances/register",
                        {} if instance_id is None else {"instanceId": instance_id})
    assert status == 200, data
    return str(data["instanceId"])


def acquire(addr: str, instance_id: str, request_id: str | None = None,
            provider: str = "openai") -> int:
    status, data = post(addr, "/v1/permits/acquire",
                        {"instanceId": instance_id, "provider": provider, "timeoutMs": 20_000},
                        request_id=request_id)
    assert status == 200, data
    assert data["instanceId"] == instance_id, data
    return int(data["permitId"])


def release(addr: str, instance_id: str, *permit_ids: int) -> int:
    status, data = post(addr, "/v1/permits/release",
                        {"instanceId": instance_id, "permitIds": list(permit_ids)})
    assert status == 200, data
    return int(data["released"])


def assert_serving(addr: str) -> None:
    """The daemon still answers, and a whole permit cycle goes through."""
    status, data = get(addr, "/v1/health")
    assert status == 200 and data["ok"] is True, data
    me = register(addr)
    permit = acquire(addr, me, provider="deepseek")  # 1000 per minute, burst 200
    assert release(addr, me, permit) == 1
    assert post(addr, "/v1/instances/unregister", {"instanceId": me}) == (200, {"ok": True})


def api_posts(addr: str) -> dict[str, dict[str, Any]]:
    """Every POST operation of the live OpenAPI document: path -> its request body schema
    (references resolved one level)."""
    status, doc = get(addr, "/v1/openapi.json")
    assert status == 200
    schemas = doc["components"]["schemas"]
    found = {}
    for path, ops in doc["paths"].items():
        if "post" in ops:
            schema = ops["post"]["requestBody"]["content"]["application/json"]["schema"]
            if "$ref" in schema:
                schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
            found[path] = schema
    assert len(found) >= 14, sorted(found)
    return found


# --- malformed bodies -------------------------------------------------------------------------
MALFORMED = [
    b"{", b"{'instanceId': 'a'}", b'{"instanceId": "a",}', b'{"instanceId": "a" "b"}',
    b"\xff\xfe\x00{", b"", b"null", b"[]", b'"text"', b"17", b"true",
    b"[" * 100_000 + b"]" * 100_000,  # nested deeper than any JSON parser recurses
    b'{"instanceId": ' * 50_000 + b"1" + b"}" * 50_000,
]


def test_malformed_json_is_a_4xx_json_error_on_every_route(addr: str) -> None:
    paths = [*api_posts(addr), "/v1/store/release", "/v1/store/heartbeat", "/v1/store/decide"]
    wrong = []
    for path in paths:
        for body in MALFORMED:
            reply = post(addr, path, raw=body)
            if not is_json_error(reply):
                wrong.append((path, body[:30], reply))
    assert wrong == []
    assert_serving(addr)


# --- wrong types and unknown fields -----------------------------------------------------------
WRONG_VALUES: list[Any] = [None, True, 0, -1, 2**64, 1.5, float("inf"), "7", "", "\x00",
                           "x" * 70_000, [], [1, "a"], {}, {"a": {"b": [None]}}]


def test_wrong_types_and_unknown_fields_are_4xx_json_errors(addr: str) -> None:
    """Every field of every operation, given a value of each wrong kind (and each unknown
    field): a 4xx JSON error or a success, never a 500."""
    me = register(addr, "typed-1")
    wrong = []
    for path, schema in api_posts(addr).items():
        for field in schema.get("properties", {}):
            for value in WRONG_VALUES:
                reply = post(addr, path, {"instanceId": me, field: value})
                if not not_a_server_error(reply):
                    wrong.append((path, field, repr(value)[:30], reply))
        reply = post(addr, path, {"instanceId": me, "surprise": 1})
        if not (is_json_error(reply) and "surprise" in reply[1]["message"]):
            wrong.append((path, "surprise", 1, reply))
    assert wrong == []
    assert_serving(addr)


def test_wrong_types_name_the_field(addr: str) -> None:
    me = register(addr, "typed-2")
    reply = post(addr, "/v1/instances/heartbeat", {"instanceId": 5})
    assert_error(reply, "invalid_request", 400)
    assert "instanceId" in reply[1]["message"]
    # no coercion: a number in a string, or a boolean, is not an integer
    for value in ("5000", True, 5.5):
        reply = post(addr, "/v1/permits/acquire",
                     {"instanceId": me, "provider": "openai", "timeoutMs": value})
        assert_error(reply, "invalid_request", 400)
        assert "timeoutMs" in reply[1]["message"]
    reply = post(addr, "/v1/permits/acquire", {"instanceId": me, "provider": "openai",
                                               "timeoutMs": 1, "tokenz": 5})
    assert_error(reply, "invalid_request", 400)
    assert "tokenz" in reply[1]["message"]
    # snake_case is an unknown field: the API is camelCase only
    reply = post(addr, "/v1/instances/heartbeat", {"instance_id": me})
    assert_error(reply, "invalid_request", 400)
    # text that is not Unicode (a lone surrogate) is refused, not stored
    reply = post(addr, "/v1/workflows/claim", raw=b'{"instanceId": "typed-2", '
                 b'"workflowId": "\\ud800"}')
    assert_error(reply, "invalid_request", 400)
    assert_serving(addr)


# --- huge bodies ------------------------------------------------------------------------------
def raw_exchange(addr: str, head: bytes, chunks: Iterator[bytes]) -> tuple[int, Any]:
    """Send ``head`` and then ``chunks`` on a raw socket, and read the reply (sending stops
    when the daemon has answered and closed: that is allowed)."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while b"\r\n\r\n" not in data or not _complete(data):
                more = sock.recv(65536)
                if not more:
                    break
                data += more
        except ConnectionResetError:
            pass
    head_part, _, body = data.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 "), data[:200]
    status = int(head_part.split(b" ", 2)[1])
    length = next((int(line.split(b":", 1)[1]) for line in head_part.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), len(body))
    return status, json.loads(body[:length])


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


@pytest.mark.parametrize("path", ["/v1/permits/acquire", "/v1/store/release",
                                  "/v1/instances/register"])
def test_a_body_over_the_bound_is_413_json(addr: str, path: str) -> None:
    body = b'{"instanceId": "' + b"x" * MAX_BODY + b'"}'
    head = (f"POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    reply = raw_exchange(addr, head, iter([body[i:i + 65536]
                                           for i in range(0, len(body), 65536)]))
    assert_error(reply, "request_too_large", 413)
    assert_serving(addr)


@pytest.mark.parametrize("path", ["/v1/permits/acquire", "/v1/store/release",
                                  "/v1/workflows/state/write"])
def test_a_chunked_body_over_the_limit_is_413_json(addr: str, path: str) -> None:
    head = (f"POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    piece = b'{"instanceId": "' + b"x" * 65536

    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // len(piece) + 4):
            yield b"%x\r\n%s\r\n" % (len(piece), piece)
        yield b"0\r\n\r\n"

    reply = raw_exchange(addr, head, chunks())
    assert_error(reply, "request_too_large", 413)
    assert_serving(addr)


def test_a_chunked_body_under_the_limit_is_served(addr: str) -> None:
    body = json.dumps({"instanceId": "chunky-1"}).encode()
    head = (f"POST /v1/instances/register HTTP/1.1\r\nHost: {addr}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    status, data = raw_exchange(addr, head, iter([
        b"%x\r\n%s\r\n" % (5, body[:5]), b"%x\r\n%s\r\n" % (len(body) - 5, body[5:]),
        b"0\r\n\r\n"]))
    assert status == 200 and data["instanceId"] == "chunky-1", data


# --- slow clients -----------------------------------------------------------------------------
def test_clients_that_send_half_a_request_and_stall_do_not_stop_others(addr: str) -> None:
    host, port = addr.rsplit(":", 1)
    stalled = []
    try:
        for i in range(20):
            sock = socket.create_connection((host, int(port)), timeout=30)
            stalled.append(sock)
            if i % 2:  # half the headers
                sock.sendall(b"POST /v1/instances/register HTTP/1.1\r\nHost: x\r\nContent-Le")
            else:  # the headers and half the body
                sock.sendall(b"POST /v1/permits/acquire HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
                             b'{"instanceId": "slow-')
        for _ in range(3):
            assert_serving(addr)
        # many at once, while the stalled ones still hold their connections
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: assert_serving(addr), range(16)))
    finally:
        for sock in stalled:
            sock.close()
    assert_serving(addr)


def test_a_retry_waiting_on_a_stalled_first_attempt_gets_an_answer(addr: str) -> None:
    """A client sends an acquire with a request id, stalls mid-body and drops; its retry with
    the same id (sent while the first still hangs) gets an answer, never a 500."""
    me = register(addr, "stalled-1")
    host, port = addr.rsplit(":", 1)
    body = json.dumps({"instanceId": me, "provider": "openai", "timeoutMs": 5000}).encode()
    first = socket.create_connection((host, int(port)), timeout=30)
    first.sendall(b"POST /v1/permits/acquire HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nX-Pi-Request-Id: stalled-req\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10]))
    result: list[Reply] = []
    retry = threading.Thread(target=lambda: result.append(post(
        addr, "/v1/permits/acquire", raw=body, request_id="stalled-req")))
    retry.start()
    retry.join(1.0)  # not a timing assertion: whether it waits or not, it must end right
    first.close()  # the first attempt's connection drops
    retry.join(60)
    assert not retry.is_alive(), "the retry hangs after the first attempt dropped"
    status, data = result[0]
    assert status == 200 and data["instanceId"] == me, result
    assert_serving(addr)


def test_a_body_cut_off_by_a_disconnect_is_never_applied(addr: str) -> None:
    """The bytes that arrived parse as a whole acquire, but the client promised more and left:
    the request is not applied (no permit held until the lease ends)."""
    me = register(addr, "cut-1")
    host, port = addr.rsplit(":", 1)
    body = json.dumps({"instanceId": me, "provider": "openai"}).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/permits/acquire HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body) + 10, body))
    assert_serving(addr)
    status, view = get(addr, "/v1/status")
    assert status == 200
    mine = next(i for i in view["instances"] if i["instanceId"] == me)
    assert mine["activeRequests"] == 0, mine


# --- unknown instances, permits released twice or by someone else ----------------------------
def test_unknown_instance_ids(addr: str) -> None:
    ghost = "ghost-" + uuid.uuid4().hex[:8]
    assert_error(post(addr, "/v1/instances/heartbeat", {"instanceId": ghost}),
                 "not_registered", 404)
    assert_error(post(addr, "/v1/permits/acquire",
                      {"instanceId": ghost, "provider": "openai", "timeoutMs": 2000}),
                 "not_registered", 404)
    assert post(addr, "/v1/permits/release", {"instanceId": ghost, "permitIds": [1, 2]}) == (
        200, {"released": 0})
    assert post(addr, "/v1/permits/report", {"instanceId": ghost, "permitId": 12345,
                                             "status": 429}) == (200, {"applied": False})
    assert post(addr, "/v1/instances/unregister", {"instanceId": ghost}) == (200, {"ok": True})
    for path, body in [
        ("/v1/workflows/claim", {"instanceId": ghost, "workflowId": "wf-ghost"}),
        ("/v1/workflows/check", {"instanceId": ghost, "workflowId": "wf-ghost"}),
        ("/v1/workflows/release", {"instanceId": ghost, "workflowId": "wf-ghost"}),
        ("/v1/workflows/state/write", {"instanceId": ghost, "workflowId": "wf-ghost",
                                       "epoch": 1, "values": {"a": 1}}),
        ("/v1/locks/acquire", {"instanceId": ghost, "resource": "r-ghost", "timeoutMs": 1000}),
        ("/v1/locks/renew", {"resource": "r-ghost", "lockId": "nope"}),
        ("/v1/locks/release", {"resource": "r-ghost", "lockId": "nope"}),
    ]:
        reply = post(addr, path, body)
        assert not_a_server_error(reply), (path, reply)
    # a ghost owns nothing afterwards
    status, data = get(addr, "/v1/status")
    assert status == 200 and ghost not in json.dumps(data["instances"])
    assert_serving(addr)


def test_a_permit_released_twice_or_by_another_instance(addr: str) -> None:
    a, b = register(addr, "owner-a"), register(addr, "other-b")
    permit = acquire(addr, a)
    assert release(addr, b, permit) == 0  # not b's: nothing changes
    _, data = get(addr, "/v1/status")
    held = {i["instanceId"]: i["activeRequests"] for i in data["instances"]}
    assert held == {a: 1, b: 0}, held
    assert release(addr, a, permit) == 1
    assert release(addr, a, permit) == 0  # twice: counts 0
    assert release(addr, a, permit, permit, 999_999) == 0
    _, data = get(addr, "/v1/status")
    assert {i["instanceId"]: i["activeRequests"] for i in data["instances"]} == {a: 0, b: 0}
    assert_serving(addr)


# --- request ids -------------------------------------------------------------------------------
def test_an_over_long_request_id_is_a_400_naming_it(addr: str) -> None:
    me = register(addr, "long-id")
    long_id = "r" * 129
    for path in api_posts(addr):
        reply = post(addr, path, {"instanceId": me}, request_id=long_id)
        assert_error(reply, "invalid_request", 400)
        assert "x-pi-request-id" in reply[1]["message"].lower(), (path, reply)
    reply = post(addr, "/v1/store/release", {"instance_id": me, "permit_ids": [1]},
                 request_id=long_id)
    assert_error(reply, "invalid_request", 400)
    # a request id of the longest length allowed is fine
    assert acquire(addr, me, request_id="r" * 128) > 0
    assert_serving(addr)


def test_a_resent_acquire_is_one_permit(addr: str) -> None:
    me = register(addr, "resend-1")
    first = acquire(addr, me, request_id="acq-1")
    assert acquire(addr, me, request_id="acq-1") == first
    _, data = get(addr, "/v1/status")
    assert [i["activeRequests"] for i in data["instances"] if i["instanceId"] == me] == [1]
    # a new id is a new permit
    second = acquire(addr, me, request_id="acq-2")
    assert second != first
    assert release(addr, me, first, second) == 2


def test_a_resent_force_claim_bumps_the_epoch_once(addr: str) -> None:
    a, b = register(addr, "wf-owner"), register(addr, "wf-taker")
    status, data = post(addr, "/v1/workflows/claim", {"instanceId": a, "workflowId": "wf-1"})
    assert status == 200, data
    epoch = data["epoch"]
    force = {"instanceId": b, "workflowId": "wf-1", "force": "live"}
    status, first = post(addr, "/v1/workflows/claim", force, request_id="force-1")
    assert status == 200 and first["epoch"] == epoch + 1, first
    assert post(addr, "/v1/workflows/claim", force, request_id="force-1") == (200, first)
    status, data = get(addr, "/v1/workflows")
    [wf] = data["workflows"]
    assert (wf["epoch"], wf["ownerInstanceId"]) == (epoch + 1, b)
    # the old owner's fenced write is refused
    assert_error(post(addr, "/v1/workflows/state/write",
                      {"instanceId": a, "workflowId": "wf-1", "epoch": epoch,
                       "values": {"k": 1}}), "stale_epoch", 409)
    # without the id, a second force-claim is a second bump
    status, data = post(addr, "/v1/workflows/claim", force)
    assert status == 200 and data["epoch"] >= epoch + 1


def test_two_clients_that_pick_the_same_request_id_get_their_own_replies(addr: str) -> None:
    """Request ids are chosen by each client (a counter, say): a request id another client
    used already is not that client's reply."""
    a, b = register(addr, "counter-a"), register(addr, "counter-b")
    permit_a = acquire(addr, a, request_id="1")
    permit_b = acquire(addr, b, request_id="1")  # acquire() checks the instanceId
    assert permit_a != permit_b
    assert release(addr, a, permit_a) == 1 and release(addr, b, permit_b) == 1


def test_a_store_operation_resent_is_applied_once(addr: str) -> None:
    me = register(addr, "store-once")
    permit = acquire(addr, me)
    args = {"instance_id": me, "permit_ids": [permit]}
    assert post(addr, "/v1/store/release", args, request_id="rel-1") == (200, {"result": 1})
    assert post(addr, "/v1/store/release", args, request_id="rel-1") == (200, {"result": 1})
    assert post(addr, "/v1/store/release", args, request_id="rel-2") == (200, {"result": 0})


# --- unknown routes and store operations --------------------------------------------------------
def test_unknown_routes_and_store_operations(addr: str) -> None:
    assert_error(post(addr, "/v1/store/nope", {}), "not_found", 404)
    assert_error(post(addr, "/v1/store/__init__", {}), "not_found", 404)
    assert_error(post(addr, "/v1/store/..%2f..%2fetc", {}), "not_found", 404)
    assert_error(post(addr, "/v1/nothing", {}), "not_found", 404)
    assert_error(get(addr, "/v2/status"), "not_found", 404)
    status, head, data = send(addr, "GET", "/v1/store/release")
    assert_error((status, data), "method_not_allowed", 405)
    assert "POST" in head.get("allow", ""), head
    status, head, data = send(addr, "DELETE", "/v1/permits/acquire")
    assert_error((status, data), "method_not_allowed", 405)
    assert "POST" in head.get("allow", ""), head
    assert_serving(addr)


# --- bad arguments to the store operations ------------------------------------------------------
def test_bad_arguments_to_every_store_operation(addr: str) -> None:
    wrong = []
    for name, op in OPS.items():
        path = f"/v1/store/{name}"
        cases: list[tuple[str, Any]] = [("not an object", [1]), ("unknown", {"bogus": 1})]
        full = {arg: None for arg, _ in op.args}
        if op.args:
            cases.append(("missing", {}))
            for arg, _ in op.args:
                cases.append((f"{arg} wrong", {**full, arg: {"x": [1.5]}}))
        for what, body in cases:
            reply = post(addr, path, body)
            if not (is_json_error(reply) and reply[0] == 400
                    and reply[1]["code"] == "invalid_request"):
                wrong.append((name, what, reply))
    assert wrong == []
    assert_serving(addr)


def test_store_arguments_that_would_break_the_store_are_refused(addr: str) -> None:
    """What the fuzzing below found: values the store could not hold (a 500 then, and some
    were kept, breaking every later view of the store)."""
    me = register(addr, "keeper-1")
    cases: list[tuple[str, dict[str, Any]]] = [
        # integers beyond what SQLite holds
        ("release", {"instance_id": me, "permit_ids": [2**64]}),
        ("cancel_wait", {"ticket": -(2**70)}),
        ("events", {"after_id": 2**63, "limit": 10}),
        ("release_workflow", {"workflow_id": "w", "instance_id": me, "epoch": 2**80,
                              "by": None}),
        # names that are not bucket or slot group keys (kept, they broke /v1/status)
        ("publish_limits", {"instance_id": me, "rates": {"": {"per_minute": 5, "burst": 1}},
                            "groups": {}}),
        ("adjust_tokens", {"changes": [["a", 8]]}),
        ("reset_learned", {"keys": ["openai"]}),
    ]
    for name, args in cases:
        assert_error(post(addr, f"/v1/store/{name}", args), "invalid_request", 400)
    # text that is not Unicode, where any JSON is allowed (kept, it broke every later read)
    reply = post(addr, "/v1/store/write_workflow_state", raw=b'{"workflow_id": "w", '
                 b'"instance_id": "keeper-1", "epoch": 1, "values": {"k": "\\ud800"}}')
    assert_error(reply, "invalid_request", 400)
    reply = post(addr, "/v1/store/record_event", raw=b'{"kind": "x", "instance_id": null, '
                 b'"data": {"\\udc00": 1}}')
    assert_error(reply, "invalid_request", 400)
    # an integer beyond what the API allows (it reached SQLite: a 500)
    reply = post(addr, "/v1/instances/heartbeat", {"instanceId": me, "pendingTasks": 2**64})
    assert_error(reply, "invalid_request", 400)
    assert "pendingTasks" in reply[1]["message"]
    for path in ("/v1/status", "/v1/limits", "/v1/workflows", "/v1/locks"):
        assert get(addr, path)[0] == 200, path
    assert post(addr, "/v1/store/events", {"after_id": 0, "limit": 100})[0] == 200
    assert_serving(addr)


def _strategy(kind: Any) -> st.SearchStrategy[Any]:
    """JSON for a value of ``kind`` as the wire carries it, with numbers and text that are
    often out of the range a caller would use (negative, huge, empty, odd)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return JSON
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_strategy(a) for a in args))
    if kind is type(None):
        return st.none()
    if kind is bool:
        return st.booleans()
    if kind is int:
        return INTS
    if kind is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind is str:
        return TEXT
    if origin is list:
        return st.lists(_strategy(args[0]), max_size=4)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(_strategy(args[0]), max_size=4)
        return st.tuples(*(_strategy(a) for a in args)).map(list)
    if origin is dict:
        return st.dictionaries(_strategy(args[0]), _strategy(args[1]), max_size=3)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return st.sampled_from([m.value for m in kind])
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return st.fixed_dictionaries({f.name: _strategy(hints[f.name])
                                      for f in dataclasses.fields(kind) if f.init})
    raise AssertionError(f"no strategy for {kind!r}")


INTS = st.one_of(st.integers(-3, 3), st.integers(-(2**63), 2**63 - 1),
                 st.sampled_from([2**63, -(2**63) - 1, 2**70, 10**30]))
TEXT = st.one_of(st.sampled_from(["", "openai", "a", "fuzz-1", "\x00", "x" * 3000,
                                  # bucket and slot group keys, and near misses
                                  "r:openai", "t:openai", "p:openai", "m:openai/gpt", "*",
                                  "rpm:openai", "m:openai", "r:"]),
                 st.text(max_size=12))
JSON = st.recursive(st.none() | st.booleans() | INTS | TEXT
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)
OP_CALLS = st.sampled_from(sorted(name for name, op in OPS.items() if op.args)).flatmap(
    lambda name: st.tuples(st.just(name), st.fixed_dictionaries(
        {arg: _strategy(kind) for arg, kind in OPS[name].args})))


def test_fuzzed_store_operation_arguments_are_never_a_server_error(tmp_path: Path) -> None:
    """Every store operation with arguments of the right names and shapes but any values
    (negative, beyond 64 bits, empty, odd text): a 4xx JSON error or a result, never a 500;
    and the store still serves afterwards (nothing poisoned)."""
    with serve_store(open_store(f"sqlite://{tmp_path / 'state'}")) as where:
        register(where, "fuzz-1")

        @settings(max_examples=300, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(OP_CALLS)
        def one(call: tuple[str, dict[str, Any]]) -> None:
            name, args = call
            reply = post(where, f"/v1/store/{name}", raw=json.dumps(args).encode())
            assert not_a_server_error(reply), (name, args, reply)

        one()
        # the fuzz may have set any limit (publish_limits is a store operation like any other),
        # so a permit may have to wait; but every view still answers, and nothing is a 500
        assert get(where, "/v1/health")[0] == 200
        for path in ("/v1/status", "/v1/limits", "/v1/workflows", "/v1/locks", "/v1/store"):
            status, data = get(where, path)
            assert status == 200, (path, data)
        me = register(where)
        reply = post(where, "/v1/permits/acquire",
                     {"instanceId": me, "provider": "openai", "timeoutMs": 0})
        assert reply[0] == 200 or is_json_error(reply), reply
