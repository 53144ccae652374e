"""``whenStoreDown``: fail closed by default; with ``local-share`` a conservative local share
of every limit while the store is unreachable, announced in the log and in ``pi-xi status``,
and the shared limits again once it is back."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time

import pytest

from cross_instance.errors import RateLimitExceeded
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


def test_local_share_while_down_then_shared_again(tmp_path, server):
    url = f"redis://127.0.0.1:{server.port}/0"
    cfg = dataclasses.replace(make_config(tmp_path / "state", store=url, rpm=60, burst=4,
                                          total=4, interval_ms=100, timeout_ms=3000),
                              when_store_down="local-share")
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="a") as a, \
            Runtime.start(cwd=tmp_path, config=cfg, instance_id="b"):
        a.permit("p").release()
        a.instances.heartbeat()  # a has seen 2 live instances: its share is 1/2
        a.store.client.connection_pool.reset()
        server.stop()
        held = [a.permit("p", timeout=1), a.permit("p", timeout=1)]  # burst 4 / 2 = 2
        with pytest.raises(RateLimitExceeded, match="local share"):
            a.permit("p", timeout=0.2)
        assert a.try_permit("p") is None
        env = {**os.environ, "PI_STORE_URL": url, "PI_RUNTIME_DIR": str(tmp_path / "state")}
        out = subprocess.run(["pi-xi", "status"], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 1 and "unreachable" in out.stderr
        assert "degraded to a local share on this host: a (pid" in out.stderr
        assert "1/2 of every limit" in out.stderr
        for p in held:
            p.release()
        server.start()
        deadline = time.monotonic() + 30
        while a._local.active and time.monotonic() < deadline:
            time.sleep(0.1)  # the next heartbeat that gets through ends the local share
        # the shared store again, once its restart grace (one heartbeat timeout) is over
        with a.permit("p", timeout=10):
            pass
        assert a.store.snapshot().instances  # it is the shared store that answered
        assert not list((tmp_path / "state").glob("degraded-*.json"))
    log = (tmp_path / ".pi" / "logs" / "coordinator.log").read_text()
    assert "degraded to a local share, 1/2 of every limit" in log
    assert "Approved locally (store unavailable): p, 1/2 share" in log
    assert "Store is back: shared limits again" in log

