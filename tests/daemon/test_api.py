"""The public HTTP API end to end, over a real socket: what a client in any language sees.

The daemon serves a SQLite store of the test's own, with the config of ``make_config`` (provider
``p``); Python runtimes on the same daemon (``store: http://...``) share its queue and limits.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from cross_instance import Runtime
from cross_instance.config import Config
from cross_instance.daemon.app import create_app
from cross_instance.daemon.serve import Served
from cross_instance.daemon.state import Daemon
from cross_instance.stores.sqlite.store import SqliteStore
from cross_instance.views.limits import build_limits
from cross_instance.views.status import build_status
from tests.daemon.served_app import served_app
from tests.helpers_runtime import make_config


@contextmanager
def daemon_for(tmp_path: Path, cfg: Config) -> Iterator[tuple[str, Daemon]]:
    with served_app(SqliteStore(tmp_path / "daemon-state"), cfg) as run:
        yield run.addr, run.daemon


def post(client: httpx.Client, path: str, body: dict[str, Any], **headers: str
         ) -> tuple[int, Any]:
    r = client.post(path, content=json.dumps(body), headers={
        "Content-Type": "application/json", **headers})
    return r.status_code, r.json()


def test_a_client_registers_takes_reports_and_releases(tmp_path):
    cfg = make_config(tmp_path, rpm=600, burst=2, total=4, timeout_ms=5000)
    with daemon_for(tmp_path, cfg) as (addr, daemon), \
            httpx.Client(base_url=f"http://{addr}") as c:
        status, me = post(c, "/v1/instances/register", {"instanceId": "ts-agent", "pid": 42})
        assert status == 200 and me["instanceId"] == "ts-agent" and me["leaseMs"] == 5000
        assert post(c, "/v1/instances/heartbeat", {"instanceId": "ts-agent",
                                                   "pendingTasks": 3})[0] == 200
        status, p1 = post(c, "/v1/permits/acquire", {"instanceId": "ts-agent", "provider": "p"})
        assert status == 200 and p1["limit"] == 600 and p1["usage"] == 1
        status, p2 = post(c, "/v1/permits/acquire", {"instanceId": "ts-agent", "provider": "p"})
        assert status == 200
        # the burst (2) is spent and the next token is 0.1 s away: a 0 ms wait is refused
        status, err = post(c, "/v1/permits/acquire", {"instanceId": "ts-agent", "provider": "p",
                                                      "timeoutMs": 0})
        assert status == 429 and err["code"] == "RATE_LIMIT_EXCEEDED"
        assert 0 < err["retryAfter"] <= 0.2 and err["retryable"] is True
        # a 429 from the provider cools every instance down
        status, rep = post(c, "/v1/permits/report", {
            "instanceId": "ts-agent", "permitId": p1["permitId"], "status": 429,
            "headers": {"retry-after": "7"}})
        assert (status, rep) == (200, {"applied": True})
        # ... and is announced for the client's instance, as a runtime announces its own
        end = time.monotonic() + 10
        while time.monotonic() < end:
            seen = {(e.kind, e.instance_id) for e in daemon.store.events(0, 1000)}
            if {("rate_limited", "ts-agent"), ("cooldown_started", "ts-agent")} <= seen:
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"no rate_limited/cooldown_started events for ts-agent: {seen}")
        # the second permit put usage at 2 of 600 a minute: far below the warning share
        assert ("rate_limit_warning", "ts-agent") not in seen
        view = c.get("/v1/status").json()
        bucket = view["providers"]["p"]
        assert bucket["cooldownRemainingS"] > 5, bucket
        mine = next(i for i in view["instances"] if i["instanceId"] == "ts-agent")
        assert mine["activeRequests"] == 2 and mine["workload"]["pendingTasks"] == 3
        assert post(c, "/v1/permits/release", {"instanceId": "ts-agent", "permitIds": [
            p1["permitId"], p2["permitId"]]})[1] == {"released": 2}
        assert post(c, "/v1/permits/release", {"instanceId": "ts-agent", "permitIds": [
            p1["permitId"]]})[1] == {"released": 0}  # twice: nothing more
        assert post(c, "/v1/instances/unregister", {"instanceId": "ts-agent"})[0] == 200
        status, err = post(c, "/v1/instances/heartbeat", {"instanceId": "ts-agent"})
        assert status == 404 and err["code"] == "not_registered"


def test_status_and_limits_are_what_the_cli_prints(tmp_path):
    cfg = make_config(tmp_path, rpm=600, burst=20)
    with daemon_for(tmp_path, cfg) as (addr, daemon), \
            httpx.Client(base_url=f"http://{addr}") as c:
        post(c, "/v1/instances/register", {"instanceId": "a"})
        post(c, "/v1/permits/acquire", {"instanceId": "a", "provider": "p"})
        over_http = c.get("/v1/status").json()
        direct = build_status(daemon.store, cfg)
        for view in (over_http, direct):  # ages move on between the two reads
            for inst in view["instances"]:
                inst.pop("heartbeatAgeMs", None)
        assert over_http == json.loads(json.dumps(direct))
        assert c.get("/v1/limits", params={"provider": "p"}).json() == json.loads(json.dumps(
            build_limits(cfg, build_status(daemon.store, cfg), "p")))


def test_http_clients_and_python_runtimes_wait_in_one_queue(tmp_path):
    """Cap 1: waiters over HTTP and a Python runtime through the same daemon are served in
    the order they came."""
    cfg = make_config(tmp_path, rpm=600_000, burst=10_000, total=1, timeout_ms=5000)
    with daemon_for(tmp_path, cfg) as (addr, _):
        py_cfg = make_config(tmp_path / "py", rpm=600_000, burst=10_000, total=1,
                             timeout_ms=5000, store=f"http://{addr}")
        order: list[str] = []
        with Runtime.start(cwd=tmp_path, config=py_cfg, instance_id="python") as rt, \
                httpx.Client(base_url=f"http://{addr}", timeout=30) as c:
            for name in ("http-a", "http-c"):
                post(c, "/v1/instances/register", {"instanceId": name})
            first = rt.permit("p", timeout=10)

            def http_waiter(name: str) -> None:
                with httpx.Client(base_url=f"http://{addr}", timeout=30) as own:
                    status, got = post(own, "/v1/permits/acquire", {
                        "instanceId": name, "provider": "p", "timeoutMs": 20_000})
                    assert status == 200, got
                    order.append(name)
                    post(own, "/v1/permits/release", {"instanceId": name,
                                                      "permitIds": [got["permitId"]]})

            def py_waiter() -> None:
                with rt.permit("p", timeout=20):
                    order.append("python")

            threads = []
            for target, args in ((http_waiter, ("http-a",)), (py_waiter, ()),
                                 (http_waiter, ("http-c",))):
                t = threading.Thread(target=target, args=args)
                t.start()
                threads.append(t)
                _wait_queued(c, len(threads))
            first.release()
            for t in threads:
                t.join(30)
        assert order == ["http-a", "python", "http-c"]


def _wait_queued(c: httpx.Client, n: int) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if c.get("/v1/status").json()["concurrency"]["waiting"] >= n:
            return
        time.sleep(0.02)
    pytest.fail(f"{n} waiters never showed in the store's queue")


def test_workflows_and_locks_over_http(tmp_path):
    cfg = make_config(tmp_path, timeout_ms=5000)
    with daemon_for(tmp_path, cfg) as (addr, _), httpx.Client(base_url=f"http://{addr}") as c:
        for name in ("one", "two"):
            post(c, "/v1/instances/register", {"instanceId": name})
        wf = "release/2026 → 🚀 \"quoted\" / slashes"
        status, got = post(c, "/v1/workflows/claim", {"instanceId": "one", "workflowId": wf})
        assert (status, got["epoch"], got["action"]) == (200, 1, "claimed")
        status, err = post(c, "/v1/workflows/claim", {"instanceId": "two", "workflowId": wf})
        assert status == 409 and err["code"] == "workflow_owned_by_other"
        assert err["details"] == {"error": "workflow_owned_by_other", "ulTaskId": wf,
                                  "ownerInstanceId": "one", "ownerPid": 0,
                                  "outcomeCode": "NONRETRYABLE_FAILURE",
                                  "retryRecommended": False}
        assert post(c, "/v1/workflows/state/write", {"instanceId": "one", "workflowId": wf,
                                                     "epoch": 1, "values": {"step": 2}})[0] == 200
        status, got = post(c, "/v1/workflows/claim", {"instanceId": "two", "workflowId": wf,
                                                      "force": "live"})
        assert (status, got["epoch"], got["action"]) == (200, 2, "force_claimed")
        status, err = post(c, "/v1/workflows/state/write", {"instanceId": "one", "workflowId": wf,
                                                            "epoch": 1, "values": {"step": 3}})
        assert status == 409 and err["code"] == "stale_epoch" and err["currentEpoch"] == 2
        assert post(c, "/v1/workflows/state/read", {"workflowId": wf})[1] == {
            "values": {"step": 2}}
        listed = c.get("/v1/workflows").json()["workflows"]
        assert [(w["workflowId"], w["ownerInstanceId"], w["epoch"]) for w in listed] == [
            (wf, "two", 2)]

        resource = "repo:main\tbranch"
        status, got = post(c, "/v1/locks/acquire", {"instanceId": "one", "resource": resource,
                                                    "ttlMs": 10_000})
        assert status == 200 and got["lock"]["token"] == 1
        lock = got["lock"]
        assert post(c, "/v1/locks/acquire", {"instanceId": "two", "resource": resource,
                                             "wait": False})[1] == {"lock": None}
        status, err = post(c, "/v1/locks/acquire", {"instanceId": "two", "resource": resource,
                                                    "timeoutMs": 50})
        assert status == 408 and err["code"] == "lock_timeout" and err["holder"] == "one"
        status, got = post(c, "/v1/locks/renew", {"resource": resource,
                                                  "lockId": lock["lockId"], "ttlMs": 20_000})
        assert status == 200 and got["lock"]["expiresAt"] > lock["expiresAt"]
        status, err = post(c, "/v1/locks/renew", {"resource": resource, "lockId": "forged"})
        assert status == 409 and err["code"] == "lock_lost"
        assert post(c, "/v1/locks/release", {"resource": resource, "lockId": "forged"})[1] == {
            "released": False}
        assert post(c, "/v1/locks/release", {"resource": resource,
                                             "lockId": lock["lockId"]})[1] == {"released": True}
        status, got = post(c, "/v1/locks/acquire", {"instanceId": "two", "resource": resource})
        assert status == 200 and got["lock"]["token"] == 2  # fencing tokens only go up


def test_a_client_that_stops_heartbeating_loses_its_permits_after_its_lease(tmp_path):
    cfg = make_config(tmp_path, total=1, rpm=600_000, burst=10_000, interval_ms=200,
                      timeout_ms=1000)
    daemon = Daemon(SqliteStore(tmp_path / "daemon-state"), cfg)
    from cross_instance.daemon.serve import maintenance

    app = create_app(daemon, lifespan=maintenance(daemon, None, 0.2))
    try:
        with Served(app) as served, httpx.Client(base_url=f"http://{served.addr}",
                                                 timeout=30) as c:
            post(c, "/v1/instances/register", {"instanceId": "gone", "leaseMs": 1000})
            post(c, "/v1/instances/register", {"instanceId": "next"})
            assert post(c, "/v1/permits/acquire", {"instanceId": "gone", "provider": "p"})[0] == 200
            # "gone" never heartbeats again; "next" keeps its lease and waits for the slot
            stop = threading.Event()

            def beat() -> None:
                while not stop.wait(0.2):
                    post(c, "/v1/instances/heartbeat", {"instanceId": "next"})

            threading.Thread(target=beat, daemon=True).start()
            try:
                status, got = post(c, "/v1/permits/acquire", {"instanceId": "next",
                                                              "provider": "p",
                                                              "timeoutMs": 20_000})
            finally:
                stop.set()
            assert status == 200, got
            ids = [i["instanceId"] for i in c.get("/v1/status").json()["instances"]]
            assert "gone" not in ids
    finally:
        daemon.close()


def test_usage_above_the_warning_share_is_announced_once_for_the_client(tmp_path):
    cfg = make_config(tmp_path, rpm=10, burst=10, timeout_ms=5000)
    with daemon_for(tmp_path, cfg) as (addr, daemon), \
            httpx.Client(base_url=f"http://{addr}") as c:
        post(c, "/v1/instances/register", {"instanceId": "busy"})
        held: list[int] = []
        for _ in range(10):  # 8 of 10 is the default share (0.8); 9 and 10 are above it too
            status, got = post(c, "/v1/permits/acquire", {"instanceId": "busy", "provider": "p",
                                                          "release": held})
            assert status == 200, got
            held = [got["permitId"]]
        daemon.announcer.close()  # written out
        warnings = [e for e in daemon.store.events(0, 1000) if e.kind == "rate_limit_warning"]
        assert [(e.instance_id, e.data["used"], e.data["limit"]) for e in warnings] == [
            ("busy", 8, 10)]


def test_two_daemons_on_one_redis_share_the_queue_and_the_limit(tmp_path):
    """Daemons on several hosts share one Redis: a waiter at one is served by a release at
    the other, and neither grants beyond the shared cap."""
    from cross_instance.stores import open_store
    from tests.conftest import redis_prefix

    cfg = make_config(tmp_path, total=1, rpm=600_000, burst=10_000, timeout_ms=5000)
    with redis_prefix() as url:
        with served_app(open_store(url), cfg) as sa, served_app(open_store(url), cfg) as sb, \
                httpx.Client(base_url=sa.base, timeout=30) as ca, \
                httpx.Client(base_url=sb.base, timeout=30) as cb:
            post(ca, "/v1/instances/register", {"instanceId": "at-a"})
            post(cb, "/v1/instances/register", {"instanceId": "at-b"})
            status, held = post(ca, "/v1/permits/acquire", {"instanceId": "at-a",
                                                            "provider": "p"})
            assert status == 200
            status, err = post(cb, "/v1/permits/acquire", {"instanceId": "at-b",
                                                           "provider": "p", "timeoutMs": 200})
            assert status == 429 and err["code"] == "RATE_LIMIT_EXCEEDED"  # cap 1, held
            got: list[tuple[int, Any]] = []
            waiter = threading.Thread(target=lambda: got.append(post(
                cb, "/v1/permits/acquire", {"instanceId": "at-b", "provider": "p",
                                            "timeoutMs": 20_000})))
            waiter.start()
            _wait_queued(ca, 1)  # b's waiter, seen through a
            post(ca, "/v1/permits/release", {"instanceId": "at-a",
                                             "permitIds": [held["permitId"]]})
            waiter.join(30)
            assert got and got[0][0] == 200, got


def test_the_cli_shows_the_daemons_view_with_the_coordinator_address(tmp_path):
    import os
    import subprocess
    import sys

    cfg = make_config(tmp_path, timeout_ms=5000)
    with daemon_for(tmp_path, cfg) as (addr, _), httpx.Client(base_url=f"http://{addr}") as c:
        post(c, "/v1/instances/register", {"instanceId": "seen-by-cli"})
        env = {**os.environ, "PI_COORDINATOR_ADDR": addr, "HOME": str(tmp_path),
               "PI_RUNTIME_DIR": str(tmp_path / "elsewhere")}
        out = subprocess.run(
            [sys.executable, "-c", "from cross_instance.cli.app import main; main()",
             "status", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=60)
        assert out.returncode == 0, out.stderr
        view = json.loads(out.stdout)
        assert [i["instanceId"] for i in view["instances"]] == ["seen-by-cli"]
        assert view["store"].startswith("http://")


def _raw_post_then_close(addr: str, path: str, body: dict[str, Any]) -> None:
    """A client that sends a long-poll and goes away before its answer."""
    import socket

    host, port = addr.rsplit(":", 1)
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: "
                  + str(len(data)).encode() + b"\r\n\r\n" + data)
        time.sleep(0.3)  # queued by now


@pytest.mark.parametrize("what", ["permit", "lock"])
def test_a_long_poll_whose_client_left_gives_its_place_back(tmp_path, what):
    cfg = make_config(tmp_path, total=1, rpm=600_000, burst=10_000, timeout_ms=5000)
    with daemon_for(tmp_path, cfg) as (addr, daemon), \
            httpx.Client(base_url=f"http://{addr}", timeout=30) as c:
        for name in ("holder", "ghost", "live"):
            post(c, "/v1/instances/register", {"instanceId": name})
        if what == "permit":
            path, ask = "/v1/permits/acquire", {"provider": "p", "timeoutMs": 20_000}
            held = post(c, path, {"instanceId": "holder", **ask})[1]["permitId"]
        else:
            path, ask = "/v1/locks/acquire", {"resource": "r", "ttlMs": 60_000,
                                              "timeoutMs": 20_000}
            held = post(c, path, {"instanceId": "holder", **ask})[1]["lock"]["lockId"]
        _raw_post_then_close(addr, path, {"instanceId": "ghost", **ask})
        got: list[tuple[int, Any]] = []
        waiter = threading.Thread(target=lambda: got.append(post(
            c, path, {"instanceId": "live", **ask})))
        waiter.start()
        time.sleep(0.3)
        if what == "permit":
            post(c, "/v1/permits/release", {"instanceId": "holder", "permitIds": [held]})
        else:
            post(c, "/v1/locks/release", {"resource": "r", "lockId": held})
        waiter.join(30)
        assert got and got[0][0] == 200, got
        snap = daemon.store.snapshot()
        assert [p.instance_id for p in snap.permits] == (["live"] if what == "permit" else [])
        if what == "lock":
            assert [lk.holder for lk in daemon.store.list_locks()] == ["live"]


def test_numbers_and_text_no_store_could_give_back_are_refused_by_name(tmp_path):
    from tests.conftest import redis_prefix

    cfg = make_config(tmp_path, timeout_ms=5000)
    with redis_prefix() as url:  # Redis keeps numbers in its scripts as doubles
        from cross_instance.stores import open_store

        with served_app(open_store(url), cfg) as run, httpx.Client(base_url=run.base) as c:
            post(c, "/v1/instances/register", {"instanceId": "a"})
            status, err = post(c, "/v1/instances/heartbeat", {
                "instanceId": "a", "pendingTasks": 2**63 - 1})
            assert status == 400 and "pendingTasks" in err["message"]
            status, err = post(c, "/v1/store/heartbeat", {
                "instance_id": "a", "workload": {"pending_tasks": 2**62}, "usage": None})
            assert status == 400 and "count" in err["message"], err
            assert c.get("/v1/status").status_code == 200  # nothing poisoned
            post(c, "/v1/workflows/claim", {"instanceId": "a", "workflowId": "w"})
            for values in ('{"k": "\\ud800"}', '{"k": NaN}', '{"k": 1e400}'):
                r = c.post("/v1/workflows/state/write", content=(
                    '{"instanceId": "a", "workflowId": "w", "epoch": 1, "values": '
                    + values + "}").encode(), headers={"Content-Type": "application/json"})
                assert r.status_code == 400 and r.json()["code"] in (
                    "invalid_argument", "invalid_request"), (values, r.text)
            assert post(c, "/v1/workflows/state/read", {"workflowId": "w"})[0] == 200
            got = post(c, "/v1/permits/acquire", {"instanceId": "a", "provider": "p"})[1]
            status, rep = post(c, "/v1/permits/report", {
                "instanceId": "a", "permitId": got["permitId"], "status": 200,
                "headers": {"x-ratelimit-limit-requests": "9" * 40,
                            "x-ratelimit-remaining-requests": "9" * 40}})
            assert status == 200, rep
            assert c.get("/v1/limits").status_code == 200


def test_the_bearer_scheme_is_case_insensitive(tmp_path):
    token = "t" * 24
    with served_app(SqliteStore(tmp_path / "s"), make_config(tmp_path), token=token) as run:
        for scheme in ("Bearer", "bearer", "BEARER"):
            r = httpx.get(f"{run.base}/v1/status",
                          headers={"Authorization": f"{scheme} {token}"})
            assert r.status_code == 200, scheme
        for bad in (f"Basic {token}", token, f"Bearer {token}x", ""):
            r = httpx.get(f"{run.base}/v1/status", headers={"Authorization": bad})
            assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_rt_events_subscribe_works_through_the_daemon(tmp_path):
    """``rt.events`` on a runtime whose store is the daemon: the same callbacks as on a
    local store, for instances of any client (here a Python runtime and an HTTP client)."""
    cfg = make_config(tmp_path, timeout_ms=5000)
    with daemon_for(tmp_path, cfg) as (addr, _), httpx.Client(base_url=f"http://{addr}") as c:
        py_cfg = make_config(tmp_path / "py", timeout_ms=5000, store=f"http://{addr}")
        connected: list[str] = []
        limited: list[str] = []
        got_all = threading.Event()

        def on_connected(event: Any) -> None:
            connected.append(event.instance_id)

        def on_limited(event: Any) -> None:
            limited.append(event.instance_id)
            got_all.set()

        with Runtime.start(cwd=tmp_path, config=py_cfg, instance_id="watcher") as rt:
            with rt.events.subscribe(on_instance_connected=on_connected,
                                     on_rate_limited=on_limited, poll=0.05):
                post(c, "/v1/instances/register", {"instanceId": "ts-agent"})
                permit = post(c, "/v1/permits/acquire", {"instanceId": "ts-agent",
                                                         "provider": "p"})[1]
                post(c, "/v1/permits/report", {"instanceId": "ts-agent",
                                               "permitId": permit["permitId"], "status": 429,
                                               "headers": {"retry-after": "1"}})
                assert got_all.wait(10), (connected, limited)
        assert "ts-agent" in connected and limited == ["ts-agent"]


def test_a_request_resent_after_a_restart_is_not_applied_twice(tmp_path):
    """With the journal (``pi-xi serve`` keeps one): a force-claim whose reply was lost and
    that is resent after the daemon restarted gets its first reply, and a request that was
    being applied when the daemon died is refused as of unknown outcome, never applied again."""
    from cross_instance.daemon.journal import Journal

    cfg = make_config(tmp_path, timeout_ms=60_000)
    journal = tmp_path / "journal.sqlite3"
    state = tmp_path / "daemon-state"
    claim = {"instanceId": "b", "workflowId": "w", "force": "live"}

    def daemon() -> Daemon:
        return Daemon(SqliteStore(state), cfg, journal=journal)

    first = daemon()
    try:
        with Served(create_app(first)) as served, \
                httpx.Client(base_url=f"http://{served.addr}") as c:
            for name in ("a", "b"):
                post(c, "/v1/instances/register", {"instanceId": name})
            post(c, "/v1/workflows/claim", {"instanceId": "a", "workflowId": "w"})
            got = post(c, "/v1/workflows/claim", claim, **{"X-Pi-Request-Id": "fc-1"})
            assert got == (200, {"workflowId": "w", "epoch": 2, "action": "force_claimed"})
    finally:
        first.close()  # its memory of replies is gone with it
    # a request the dead daemon had begun and not finished
    body = json.dumps({"instanceId": "b", "workflowId": "w", "force": "live"})
    pending = Journal(journal)
    import hashlib

    digest = hashlib.blake2b(body.encode(), digest_size=16).hexdigest()
    pending.intend(f"/v1/workflows/claim\x00fc-2\x00{digest}")
    pending.close()
    second = daemon()
    try:
        with Served(create_app(second)) as served, \
                httpx.Client(base_url=f"http://{served.addr}") as c:
            again = post(c, "/v1/workflows/claim", claim, **{"X-Pi-Request-Id": "fc-1"})
            assert again == got  # the first reply, not a second force-claim
            r = c.post("/v1/workflows/claim", content=body.encode(), headers={
                "Content-Type": "application/json", "X-Pi-Request-Id": "fc-2"})
            assert r.status_code == 409 and r.json()["code"] == "request_outcome_unknown"
            assert [w["epoch"] for w in c.get("/v1/workflows").json()["workflows"]] == [2]
    finally:
        second.close()


def test_a_stuck_process_holding_the_sqlite_lock_fails_requests_instead_of_freezing(tmp_path):
    """Another process holds the SQLite store's write lock and does not let go (paused,
    stuck): the daemon answers health meanwhile, and a permit request fails with the
    retryable store_unavailable after the daemon's bound instead of waiting for the holder."""
    import subprocess
    import sys

    cfg = make_config(tmp_path, timeout_ms=60_000)
    state = tmp_path / "daemon-state"
    holder = None
    try:
        with served_app(SqliteStore(state, lock_wait_s=0.3), cfg) as run, \
                httpx.Client(base_url=run.base, timeout=30) as c:
            post(c, "/v1/instances/register", {"instanceId": "a"})
            holder = subprocess.Popen([sys.executable, "-c", (
                "import fcntl, os, sys, time\n"
                f"fd = os.open({str(state / 'coordinator.lock')!r}, os.O_RDWR)\n"
                "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                "print('held', flush=True)\n"
                "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            status, err = post(c, "/v1/permits/acquire", {"instanceId": "a", "provider": "p"})
            assert status == 503 and err["code"] == "store_unavailable", err
            assert "locked" in err["message"] and err["retryable"] is True
            assert c.get("/v1/health").json()["ok"] is True
            holder.kill()
            holder.wait()
            status, got = post(c, "/v1/permits/acquire", {"instanceId": "a", "provider": "p"})
            assert status == 200, got
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
