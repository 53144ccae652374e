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
