"""Real client processes (issue 17): four of them through the gateway stay within the
provider's limit while the same four going direct get 429s; a client killed mid-stream
frees its permit at once (not after a lease) and the upstream request is cancelled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import psutil

from cross_instance.stores.sqlite.store import SqliteStore
from cross_instance.testing.fakeprovider import FakeProvider
from tests.daemon.served_app import served_app, wait_until
from tests.gateway.conftest import gateway_config

ROOT = Path(__file__).resolve().parents[2]
PER_CLIENT = 10


def _clients(url: str, count: int = 4) -> Counter[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.gateway.clients", "burst", url,
                               str(PER_CLIENT)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for _ in range(count)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:  # all start together
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    total: Counter[str] = Counter()
    for p in procs:
        out, _ = p.communicate(timeout=60)
        total.update(json.loads(out.strip().splitlines()[-1]))
    return total


def test_four_processes_stay_within_the_limit_that_direct_calls_break(tmp_path: Path) -> None:
    # the provider's true limit: 20/s with a burst of 5; the gateway is set a little below it
    with FakeProvider(requests_per_minute=1200, burst=5) as fake:
        direct = _clients(fake.url + "/v1/chat/completions")
        assert direct["429"] > 0, direct  # uncoordinated: they run into the provider's limit
        fake.refill()
        with served_app(SqliteStore(tmp_path / "state"),
                        gateway_config(fake, rpm=1080, burst=4)) as run:
            through = _clients(f"{run.base}/openai/v1/chat/completions")
        assert through == {"200": 4 * PER_CLIENT}, through  # every one waited its turn
        assert fake.stats()["rate_limited"] == direct["429"]  # none more at the provider


def _upstream_connections(port: int) -> int:
    return sum(1 for c in psutil.Process().net_connections("tcp")
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_a_client_killed_mid_stream_frees_its_permit(tmp_path: Path) -> None:
    with FakeProvider(requests_per_minute=6000, burst=100) as fake:
        cfg = replace(gateway_config(fake), heartbeat_timeout_ms=120_000)  # no lease help
        with served_app(SqliteStore(tmp_path / "state"), cfg) as run:
            client = subprocess.Popen(
                [sys.executable, "-m", "tests.gateway.clients", "stream",
                 f"{run.base}/openai/v1/chat/completions"],
                stdout=subprocess.PIPE, text=True, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert client.stdout is not None
            assert client.stdout.readline().split() == ["streaming", "200"]
            held = run.daemon.store.snapshot().permits
            assert [p.instance_id for p in held] == ["streaming-client"]
            assert _upstream_connections(fake.port) == 1
            client.send_signal(signal.SIGKILL)
            client.wait(10)
            wait_until(lambda: not run.daemon.store.snapshot().permits,
                       "the killed client's permit is released", 5)
            wait_until(lambda: _upstream_connections(fake.port) == 0,
                       "the upstream request is cancelled", 5)
            statuses = run.daemon.store.snapshot()
            assert [i.instance_id for i in statuses.instances] == ["streaming-client"]
