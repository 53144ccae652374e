"""Property-based fuzzing of the daemon's public API (issue 16, "Bad input and faults"):
schemathesis reads the OpenAPI document a live daemon serves at ``/v1/openapi.json`` and sends
every operation generated requests, valid and invalid, to another live daemon (a SQLite store
in a temporary directory, on a real socket). Every answer must be a documented status with the
documented content type and schema: never a 5xx, an invalid request always a 4xx JSON error.

``positive_data_acceptance`` (a request valid by the document is accepted) is left out: the
document cannot say everything the daemon checks (an instance id's characters, a workflow id's
length in the store, an instance that is not registered), so a valid-looking request may rightly
get a 4xx JSON error, which the other checks verify.

Defects this found: errors documented as FastAPI's 422 body while the daemon answers 400 with
``{"code", ...}`` (checked below); a 405 without its ``Allow`` header, and a request id reused
with another body answered with the first body's reply (both kept in ``test_bad_input.py``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from cross_instance.stores import open_store
from tests.conftest import serve_store

EXAMPLES = 100  # per operation: about 15 s for the whole file on two busy cores


def _live_document() -> Any:
    """The OpenAPI document as a live daemon serves it. Loaded when the module is, because the
    tests are made from it (schemathesis's lazy ``from_fixture`` fails on pytest 9: it reads
    ``request.node._nodeid``); ``daemon`` below serves the same document, as checked."""
    with tempfile.TemporaryDirectory() as where:
        with serve_store(open_store(f"sqlite://{where}/state")) as addr:
            return schemathesis.openapi.from_url(f"http://{addr}/v1/openapi.json", timeout=30)


schema = _live_document()
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.missing_required_header,
    checks.unsupported_method,
]
STREAMS = {"/v1/events"}  # server-sent events: a 200 never ends, so only its start is read


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fuzzed daemon; once every test of this module (in this worker) is done, it must
    still serve a whole permit cycle."""
    store = open_store(f"sqlite://{tmp_path_factory.mktemp('fuzz') / 'state'}")
    with serve_store(store) as addr:
        yield f"http://{addr}"
        still_serving(f"http://{addr}")


def still_serving(daemon: str) -> None:
    assert requests.get(f"{daemon}/v1/health", timeout=30).json()["ok"] is True
    reply = requests.post(f"{daemon}/v1/instances/register", json={}, timeout=30)
    assert reply.status_code == 200, reply.text
    me = reply.json()["instanceId"]
    reply = requests.post(f"{daemon}/v1/permits/acquire", timeout=30, json={
        "instanceId": me, "provider": "after-fuzz", "timeoutMs": 20_000})
    assert reply.status_code == 200, reply.text
    permit = reply.json()["permitId"]
    reply = requests.post(f"{daemon}/v1/permits/release", timeout=30, json={
        "instanceId": me, "permitIds": [permit]})
    assert reply.json() == {"released": 1}, reply.text
    for path in ("/v1/status", "/v1/limits", "/v1/workflows", "/v1/locks"):
        assert requests.get(f"{daemon}{path}", timeout=30).status_code == 200, path


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def test_the_fuzzed_document_is_the_one_the_daemon_serves(daemon: str) -> None:
    served = requests.get(f"{daemon}/v1/openapi.json", timeout=30).json()
    assert served == schema.raw_schema
    assert len(list(schema.get_all_operations())) >= 19
    # every error the daemon answers is its JSON error, not FastAPI's 422 body
    for path, ops in served["paths"].items():
        for method, op in ops.items():
            assert "422" not in op["responses"], (method, path)
            if path != "/v1/health":
                assert "4XX" in op["responses"], (method, path)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: Any, daemon: str,
                                               session: requests.Session) -> None:
    if case.path in STREAMS:  # the request as schemathesis makes it, read only to its head
        with session.request(**case.as_transport_kwargs(base_url=daemon), timeout=30,
                             stream=True) as response:
            if response.status_code == 200:
                assert response.headers["content-type"].startswith("text/event-stream")
                return
            response.content  # noqa: B018 - an error's body is whole: read it to check it
        case.validate_response(response, checks=CHECKS)
        return
    case.call_and_validate(base_url=daemon, session=session, timeout=30, checks=CHECKS)


def test_a_schema_path_is_not_a_store_path() -> None:
    # the store protocol (/v1/store/<op>) is not in the document: test_bad_input.py fuzzes it
    assert not any(p.startswith("/v1/store") for p in schema.raw_schema["paths"])
