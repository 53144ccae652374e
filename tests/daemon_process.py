"""A real ``pi-xi serve`` in a process of its own, on a free loopback port, for the tests that
need the daemon as users run it (killed, restarted, shared by worker processes)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVE = "from cross_instance.cli.app import main; main()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(addr: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{addr}/v1/health", timeout=timeout) as r:
            return bool(json.loads(r.read()).get("ok"))
    except OSError:
        return False


class DaemonProcess:
    """``start()``/``kill()`` may be called again: the same port and state each time."""

    def __init__(self, workdir: Path, port: int | None = None, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.args = args
        self.env = {**os.environ, "HOME": str(workdir), "PI_RUNTIME_DIR": str(workdir / "state"),
                    **(env or {})}
        self.env.pop("PI_COORDINATOR_ADDR", None)
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 30.0) -> DaemonProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "--port", str(self.port), *self.args],
            cwd=self.workdir, env=self.env, stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "serve.err", "ab"))  # noqa: SIM115 - the child keeps it
        deadline = time.monotonic() + timeout
        while not healthy(self.addr, 0.5):
            if self.proc.poll() is not None:
                raise RuntimeError(f"pi-xi serve exited {self.proc.returncode}: "
                                   f"{(self.workdir / 'serve.err').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("pi-xi serve did not become healthy")
            time.sleep(0.05)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@contextmanager
def daemon_process(workdir: Path, *args: str, env: dict[str, str] | None = None
                   ) -> Iterator[DaemonProcess]:
    d = DaemonProcess(workdir, None, *args, env=env).start()
    try:
        yield d
    finally:
        d.kill()
