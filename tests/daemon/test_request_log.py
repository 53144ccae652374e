"""Requests in ``.pi/logs/coordinator.log``: one line each (method, path, status, ms) when the
daemon runs with debug, refused ones too; not a single one without debug."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from cross_instance.runtime.logs import LineLog, log_path
from cross_instance.stores import open_store
from tests.conftest import serve_store

LINE = re.compile(r"^\[[^]]+\] HTTP (GET|POST) (\S+) (\d{3}|-) \d+\.\d ms$")


def _requests_logged(tmp_path: Path, debug: bool, token: str | None = None) -> list[str]:
    path = log_path(tmp_path, "coordinator")
    log = LineLog(path, "coordinator")
    store = open_store(f"sqlite://{tmp_path / 'state'}")
    try:
        with serve_store(store, log=log, debug=debug, token=token) as addr, \
                httpx.Client(base_url=f"http://{addr}", timeout=30) as http:
            if token is not None:
                assert http.get("/v1/status").status_code == 401
                http.headers["Authorization"] = f"Bearer {token}"
            http.post("/v1/instances/register", json={"instanceId": "r1"}).raise_for_status()
            http.get("/v1/status").raise_for_status()
            assert http.post("/v1/instances/heartbeat", json={}).status_code == 400
    finally:
        log.close()
    return [line for line in path.read_text().splitlines() if "] HTTP " in line]


def test_debug_writes_one_line_per_request(tmp_path: Path) -> None:
    lines = _requests_logged(tmp_path, debug=True)
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    seen = [(m.group(1), m.group(2), m.group(3)) for m in parsed if m]
    assert seen == [("POST", "/v1/instances/register", "200"), ("GET", "/v1/status", "200"),
                    ("POST", "/v1/instances/heartbeat", "400")]


def test_debug_logs_refused_requests_too(tmp_path: Path) -> None:
    lines = _requests_logged(tmp_path, debug=True, token="request-log-token-0123456789")
    assert any(" HTTP GET /v1/status 401 " in line for line in lines), lines
    assert not any("request-log-token" in line for line in lines)


def test_without_debug_no_request_is_logged(tmp_path: Path) -> None:
    assert _requests_logged(tmp_path, debug=False) == []
    # the log itself is in use (the daemon writes what it decided)
    assert "Instance r1 registered over HTTP" in log_path(tmp_path, "coordinator").read_text()
