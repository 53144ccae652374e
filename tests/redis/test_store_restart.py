"""The Redis store across a server that lost everything (restarted without persistence):
holders learn it, and fencing tokens never go backwards (FAULTS.md F11, for workflows)."""

from __future__ import annotations

import pytest

from cross_instance.errors import StaleEpochError
from cross_instance.stores.redis.store import RedisStore
from tests.conftest import record
from tests.redis.private_server import private_redis


def test_epochs_stay_above_everything_issued_before_an_empty_restart(tmp_path):
    with private_redis(tmp_path) as port:
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        assert any("persistence off" in w for w in store.warnings)
        store.register_instance(record("a"))
        old = [store.claim_workflow(f"wf{i}", "a").epoch for i in range(3)]
        store.client.flushall()  # what a restart without persistence leaves
        assert store.heartbeat("a") is False  # the holder learns its lease is gone
        with pytest.raises(StaleEpochError):
            store.write_workflow_state("wf0", "a", old[0], {"x": 1})
        store.register_instance(record("a"))
        new = store.claim_workflow("wf0", "a").epoch
        assert new > max(old)
        store.close()


def test_persistence_off_is_announced_in_status(tmp_path):
    import os
    import subprocess

    from cross_instance.runtime import Runtime
    from tests.helpers_runtime import make_config

    with private_redis(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        cfg = make_config(tmp_path / "state", store=url, timeout_ms=30_000)
        with Runtime.start(cwd=tmp_path, config=cfg, instance_id="w"):
            env = {**os.environ, "PI_STORE_URL": url, "PI_RUNTIME_DIR": str(tmp_path / "s")}
            out = subprocess.run(["pi-xi", "status"], env=env, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=60).stdout
            assert "Warning: Redis at" in out and "persistence off" in out
        log = (tmp_path / ".pi" / "logs" / "coordinator.log").read_text()
        assert "Store warning" in log and "persistence off" in log
