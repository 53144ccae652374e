"""The Node client through the provider gateway (issue 17): ``node gateway.mjs`` registers,
then calls the fake provider through the daemon with plain ``fetch``, a streamed answer
read chunk by chunk included. Skipped only when ``node`` is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cross_instance.stores.sqlite.store import SqliteStore
from cross_instance.testing.fakeprovider import FakeProvider
from tests.daemon.served_app import served_app
from tests.gateway.conftest import KEY, gateway_config

CLIENT_DIR = Path(__file__).resolve().parents[2] / "examples" / "node-client"
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="`node` is not installed: the example needs Node 20+")
def test_node_fetch_through_the_gateway(tmp_path: Path) -> None:
    assert NODE is not None
    with FakeProvider(requests_per_minute=6000, burst=100) as fake, served_app(
            SqliteStore(tmp_path / "state"), gateway_config(fake)) as run:
        env = {**os.environ, "PI_COORDINATOR_ADDR": run.addr, "OPENAI_API_KEY": KEY,
               "PI_INSTANCE_ID": "node-gateway-test"}
        done = subprocess.run([NODE, "gateway.mjs"], cwd=CLIENT_DIR, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        steps = {line["step"]: line for line in map(json.loads, done.stdout.splitlines())}
        assert steps["registered"]["instanceId"] == "node-gateway-test"
        assert steps["completion"]["status"] == 200 and steps["completion"]["text"]
        assert steps["completion"]["usage"]["total_tokens"] > 0
        stream = steps["stream"]
        assert stream["status"] == 200 and stream["text"]
        assert stream["contentType"].startswith("text/event-stream")
        assert fake.stats()["apiKeys"] == [KEY]
        assert not run.daemon.store.snapshot().permits
