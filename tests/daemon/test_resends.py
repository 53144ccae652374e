"""Requests resent with the same ``X-Pi-Request-Id`` through a real ``pi-xi serve``: a lock
wait its client left is run again when resent (its 499 is never kept, in memory or in the
journal), and a workflow state write resent after a restart does not undo a later one. A lost
lock's renewal error names no made-up token."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx
import pytest

from tests.daemon_process import DaemonProcess


def _post(c: httpx.Client, path: str, body: dict[str, Any], request_id: str | None = None
          ) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if request_id is not None:  # (a resend is the same bytes: the body is part of its key)
        headers["X-Pi-Request-Id"] = request_id
    r = c.post(path, content=json.dumps(body), headers=headers)
    return r.status_code, r.json() if r.content else None


def _left_after_sending(addr: str, path: str, body: dict[str, Any], request_id: str) -> None:
    """Send a request and close the connection without reading the answer."""
    data = json.dumps(body).encode()
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n"
                  f"X-Pi-Request-Id: {request_id}\r\nContent-Length: {len(data)}\r\n\r\n"
                  .encode() + data)
        time.sleep(0.5)  # waiting in the lock's queue


@pytest.mark.timeout(120)
def test_resends_after_a_dropped_connection_and_after_a_restart(tmp_path):
    daemon = DaemonProcess(tmp_path / "daemon").start()
    try:
        with httpx.Client(base_url=f"http://{daemon.addr}", timeout=30) as c:
            for name in ("A", "B"):
                assert _post(c, "/v1/instances/register",
                             {"instanceId": name, "leaseMs": 60_000})[0] == 200
            status, got = _post(c, "/v1/locks/acquire", {"instanceId": "B", "resource": "Q",
                                                         "ttlMs": 60_000})
            held = got["lock"]
            wait = {"instanceId": "A", "resource": "Q", "ttlMs": 60_000, "timeoutMs": 10_000}
            _left_after_sending(daemon.addr, "/v1/locks/acquire", wait, "q1")
            time.sleep(0.5)  # the daemon saw it leave: its place went back
            assert _post(c, "/v1/locks/release", {"resource": "Q",
                                                  "lockId": held["lockId"]})[1] == {
                "released": True}
            assert c.get("/v1/locks").json() == {"locks": []}  # not granted to the one gone
            status, got = _post(c, "/v1/locks/acquire", wait, request_id="q1")  # the retry
            assert status == 200 and got["lock"]["holder"] == "A", (status, got)

            status, err = _post(c, "/v1/locks/renew", {"resource": "Q", "lockId": "forged"})
            assert status == 409 and err["code"] == "lock_lost" and err["token"] is None
            assert "token 0" not in err["message"]

            claim = _post(c, "/v1/workflows/claim", {"instanceId": "A", "workflowId": "W"})[1]
            write = {"instanceId": "A", "workflowId": "W", "epoch": claim["epoch"]}
            assert _post(c, "/v1/workflows/state/write", {**write, "values": {"step": 1}},
                         request_id="w1")[0] == 200
            assert _post(c, "/v1/workflows/state/write", {**write, "values": {"step": 2}},
                         request_id="w2")[0] == 200
        daemon.kill()
        daemon.start()
        with httpx.Client(base_url=f"http://{daemon.addr}", timeout=30) as c:
            status, _ = _post(c, "/v1/workflows/state/write", {**write, "values": {"step": 1}},
                              request_id="w1")  # its first reply came back late: resent
            assert status == 200
            assert _post(c, "/v1/workflows/state/read", {"workflowId": "W"})[1] == {
                "values": {"step": 2}}  # not undone
    finally:
        daemon.kill()
