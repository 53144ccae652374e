"""A private ``redis-server`` on a free port for tests that change server settings or kill it
(the shared one on 6379 is never reconfigured)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.conftest import declare_empty


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_redis(tmp: Path, *args: str, declare: bool = True) -> Iterator[int]:
    """A private server on a free port; ``declare``: its default prefix declared empty."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: the Redis fault tests need it "
                    "(apt install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        if declare:
            declare_empty(f"redis://127.0.0.1:{port}/0")
        yield port
    finally:
        proc.kill()
        proc.wait()


class Server:
    """A private redis-server that can be restarted on the same port (without persistence)."""

    def __init__(self, tmp) -> None:
        self.tmp, self.port = tmp, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def shutdown_nosave(self) -> None:
        """``SHUTDOWN NOSAVE``: the server exits on its own, keeping nothing."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
            conn.sendall(b"SHUTDOWN NOSAVE\r\n")  # no client retrying a closed connection
            conn.recv(1024)  # the server closes it on its way out
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def url(self, options: str = "") -> str:
        return f"redis://127.0.0.1:{self.port}/0{options}"

    def admin(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    s.start()
    declare_empty(s.url())  # new: no grace before the first permit (a restart has one)
    yield s
    s.stop()
