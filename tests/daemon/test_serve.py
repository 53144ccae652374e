"""``pi-xi serve`` as people run it: the real command in a subprocess (its own cwd, HOME and
PI_RUNTIME_DIR under tmp_path, a free port), reached over real sockets. Loopback by default;
anything else needs a token; a port in use is one clear message; SIGTERM is a clean stop; and
a ``Runtime`` in another process takes its permits through it (``PI_COORDINATOR_ADDR``), and
gets ``StoreUnavailable`` in a bounded time, never a hang, once it is gone.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PI_XI = str(Path(sys.executable).parent / "pi-xi")
TOKEN = "s3cret-token-0123456789"
START_LIMIT_S = 60.0  # a bound against hangs on a loaded machine, never a measurement


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PI_") and k not in ("PYTEST_XDIST_WORKER",)}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), PI_RUNTIME_DIR=str(tmp_path / "state"), **extra)
    return env


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    port: int
    cwd: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit status and what it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err


def run_serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[str]:
    where = cwd or tmp_path / "daemon"
    where.mkdir(exist_ok=True)
    return subprocess.Popen([PI_XI, "serve", *args], cwd=where,
                            env=env if env is not None else clean_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def request(port: int, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, None if body is None else json.dumps(body).encode(),
                     {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data) if data else None


def wait_serving(proc: subprocess.Popen[str], port: int) -> None:
    """Until ``/v1/health`` answers (or the command ended: then fail with what it said)."""
    deadline = time.monotonic() + START_LIMIT_S
    while True:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"pi-xi serve exited {proc.returncode}: {err}")
        try:
            status, data = request(port, "GET", "/v1/health")
            if status == 200 and data.get("service") == "pi-xi":
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "pi-xi serve never answered /v1/health"
        time.sleep(0.05)


def wait_until(condition: Any, what: str) -> None:
    """Wait for ``condition`` (a bound against hangs, never a measurement)."""
    deadline = time.monotonic() + START_LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


@contextmanager
def serving(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Iterator[Daemon]:
    """A running ``pi-xi serve`` on a free port (another, should a parallel test take the
    port first); stopped (SIGTERM) at the end if still running."""
    for _ in range(5):
        port = free_port()
        proc = run_serve(tmp_path, "--port", str(port), *args, env=env, cwd=cwd)
        try:
            wait_serving(proc, port)
        except AssertionError as err:
            if "already in use" in str(err):
                continue
            raise
        break
    else:
        raise AssertionError("no free port after five tries")
    daemon = Daemon(proc, port, cwd or tmp_path / "daemon")
    try:
        yield daemon
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)


def refused(tmp_path: Path, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """A ``pi-xi serve`` expected to refuse to start (it must end on its own)."""
    where = tmp_path / "daemon"
    where.mkdir(exist_ok=True)
    return subprocess.run([PI_XI, "serve", *args], cwd=where,
                          env=env if env is not None else clean_env(tmp_path),
                          capture_output=True, text=True, timeout=120)


def test_serves_loopback_by_default_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with serving(tmp_path) as daemon:
        status, data = request(daemon.port, "GET", "/v1/health")
        assert status == 200 and data["service"] == "pi-xi" and data["ok"] is True
        status, data = request(daemon.port, "GET", "/v1/status")  # no token on loopback
        assert status == 200 and data["instances"] == []
        assert _listening_addresses(daemon.proc.pid, daemon.port) == {"127.0.0.1"}
        code, err = daemon.stop()
    assert code == 0, err
    log = (tmp_path / "daemon" / ".pi" / "logs" / "coordinator.log").read_text()
    assert f"Coordinator listening on 127.0.0.1:{daemon.port}" in log
    assert f"Coordinator on 127.0.0.1:{daemon.port} stopped" in log
    assert str(tmp_path / "state") in log  # the store it served: the embedded SQLite


def _listening_addresses(pid: int, port: int) -> set[str]:
    import psutil

    proc = psutil.Process(pid)
    listing = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
    return {c.laddr.ip for c in listing("inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_any_other_address_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    out = refused(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()))
    assert out.returncode == 2, out
    assert "PI_COORDINATOR_TOKEN" in out.stderr and "PI_COORDINATOR_TOKEN_FILE" in out.stderr
    assert "0.0.0.0" in out.stderr and "Traceback" not in out.stderr
    # a token too short is refused too, naming the rule
    out = refused(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()),
                  env=clean_env(tmp_path, PI_COORDINATOR_TOKEN="short"))
    assert out.returncode == 2 and "16 characters" in out.stderr, out


def _assert_token_required(port: int) -> None:
    status, data = request(port, "GET", "/v1/health")  # health stays open
    assert status == 200 and data["ok"] is True
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                    {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}):
        for method, path, body in (("GET", "/v1/status", None), ("GET", "/v1/openapi.json", None),
                                   ("POST", "/v1/instances/register", {}),
                                   ("POST", "/v1/store/now_ns", {}),
                                   ("GET", "/v1/no-such-route", None)):
            status, data = request(port, method, path, body, headers)
            assert status == 401, (headers, path, data)
            assert data["code"] == "unauthorized" and set(data) == {"code", "message",
                                                                     "retryable"}, data
    status, data = request(port, "GET", "/v1/status",
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and data["instances"] == [], data


def test_with_a_token_it_serves_any_address_and_refuses_requests_without_it(
        tmp_path: Path) -> None:
    env = clean_env(tmp_path, PI_COORDINATOR_TOKEN=TOKEN)
    with serving(tmp_path, "--host", "0.0.0.0", env=env) as daemon:
        assert _listening_addresses(daemon.proc.pid, daemon.port) == {"0.0.0.0"}
        _assert_token_required(daemon.port)
        code, err = daemon.stop()
        assert code == 0, err
    log = (tmp_path / "daemon" / ".pi" / "logs" / "coordinator.log").read_text()
    assert "(token required)" in log and TOKEN not in log


def test_a_token_file_must_be_private(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    out = refused(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()),
                  "--token-file", str(token_file))
    assert out.returncode == 2, out
    assert "0644" in out.stderr and "chmod 600" in out.stderr and TOKEN not in out.stderr
    # the same through PI_COORDINATOR_TOKEN_FILE
    out = refused(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()),
                  env=clean_env(tmp_path, PI_COORDINATOR_TOKEN_FILE=str(token_file)))
    assert out.returncode == 2 and "chmod 600" in out.stderr, out

    token_file.chmod(0o600)
    with serving(tmp_path, "--host", "0.0.0.0", "--token-file", str(token_file)) as daemon:
        _assert_token_required(daemon.port)


def test_a_port_used_by_another_program_is_one_clear_message(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        out = refused(tmp_path, "--port", str(port))
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"port {port}" in lines[0] and "already in use" in lines[0]
    assert "another program" in lines[0] and "another `pi-xi serve`" not in lines[0]


def test_a_port_used_by_another_pi_xi_serve_says_so(tmp_path: Path) -> None:
    with serving(tmp_path) as first:
        second_home = tmp_path / "second"
        second_home.mkdir()
        out = refused(second_home, "--port", str(first.port))
        assert out.returncode == 2, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert f"port {first.port}" in lines[0] and "another `pi-xi serve`" in lines[0]
        # the first one is unharmed
        assert request(first.port, "GET", "/v1/health")[0] == 200
        code, err = first.stop()
        assert code == 0, err


CLIENT = textwrap.dedent('''
    """A Python agent using the daemon through PI_COORDINATOR_ADDR (or config=): it obeys
    lines on stdin and answers each with one JSON line on stdout."""
    import dataclasses, json, os, pathlib, sys, time
    from cross_instance import Runtime, StoreUnavailable
    from cross_instance.config import Config

    if sys.argv[1] == "config":
        cfg = dataclasses.replace(Config(), coordinator_addr=os.environ.pop("ADDR"),
                                  runtime_dir=pathlib.Path(os.environ["PI_RUNTIME_DIR"]))
        rt = Runtime.start(config=cfg, instance_id="py-agent")
    else:
        rt = Runtime.start(instance_id="py-agent")

    def say(**data):
        print(json.dumps(data), flush=True)

    say(ready=rt.instance_id, store=type(rt.store).__name__)
    held = []
    for line in sys.stdin:
        cmd = line.strip()
        started = time.monotonic()
        try:
            if cmd == "take":
                held.append(rt.permit("openai", timeout=20))
                say(ok=True, permit=held[-1].permit_id)
            elif cmd == "release":
                held.pop().release()
                say(ok=True)
            elif cmd == "exit":
                rt.close()
                say(ok=True)
                break
        except StoreUnavailable as err:
            say(error="StoreUnavailable", retryable=err.retryable, message=str(err),
                seconds=time.monotonic() - started)
        except Exception as err:
            say(error=type(err).__name__, message=str(err))
''')


@contextmanager
def agent(tmp_path: Path, mode: str, addr: str) -> Iterator[Any]:
    script = tmp_path / "agent.py"
    script.write_text(CLIENT)
    where = tmp_path / "agent"
    where.mkdir(exist_ok=True)
    extra = {"PI_COORDINATOR_ADDR": addr} if mode == "env" else {"ADDR": addr}
    env = clean_env(tmp_path, PYTHONPATH=str(Path(__file__).parents[2]), **extra)
    env["PI_RUNTIME_DIR"] = str(tmp_path / "agent-state")  # never the daemon's own store
    proc = subprocess.Popen([sys.executable, str(script), mode], cwd=where, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def ask(command: str | None = None) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        if command is not None:
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
        line = proc.stdout.readline()
        assert line, f"the agent ended: {proc.communicate()[1]}"
        return json.loads(line)  # type: ignore[no-any-return]

    try:
        yield ask
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def _held(port: int, instance_id: str) -> int:
    status, data = request(port, "GET", "/v1/status")
    assert status == 200, data
    return sum(i["activeRequests"] for i in data["instances"] if i["instanceId"] == instance_id)


@pytest.mark.parametrize("mode", ["env", "config"])
def test_a_runtime_takes_its_permits_through_the_daemon(tmp_path: Path, mode: str) -> None:
    with serving(tmp_path) as daemon, agent(tmp_path, mode, daemon.addr) as ask:
        ready = ask()
        assert ready == {"ready": "py-agent", "store": "RemoteStore"}, ready
        reply = ask("take")
        assert reply.get("ok"), reply
        assert _held(daemon.port, "py-agent") == 1  # the daemon's status shows the permit
        _, data = request(daemon.port, "GET", "/v1/status")
        assert data["providers"]["openai"]["activeRequests"] == 1, data["providers"]
        assert ask("release") == {"ok": True}
        # a release is sent a few ms later (runtime.releases), or with the next request
        wait_until(lambda: _held(daemon.port, "py-agent") == 0, "the release reached it")
        assert ask("exit") == {"ok": True}
        _, data = request(daemon.port, "GET", "/v1/status")
        assert "py-agent" not in [i["instanceId"] for i in data["instances"]]
    # the agent kept nothing of its own: its state directory was never used
    assert not (tmp_path / "agent-state").exists()


@pytest.mark.timeout(120)
def test_with_the_daemon_stopped_a_permit_is_store_unavailable_not_a_hang(
        tmp_path: Path) -> None:
    with serving(tmp_path) as daemon, agent(tmp_path, "env", daemon.addr) as ask:
        assert ask()["ready"] == "py-agent"
        assert ask("take").get("ok")
        code, err = daemon.stop()
        assert code == 0, err
        reply = ask("take")  # bounded: the test's timeout fails a hang
        assert reply["error"] == "StoreUnavailable", reply
        assert reply["retryable"] is True
        assert f"127.0.0.1:{daemon.port}" in reply["message"], reply
