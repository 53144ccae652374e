"""``pi-xi`` against a Redis store named by ``PI_STORE_URL``: the same views as on SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from cross_instance.runtime import Runtime
from cross_instance.stores.redis.store import RedisStore
from tests.helpers_runtime import make_config


@pytest.fixture
def url():
    url = f"redis://127.0.0.1:6379/0?prefix=pi-cli-{uuid.uuid4().hex[:12]}:"
    assert cli(Path(tempfile.mkdtemp()), url, "pi-xi", "store", "declare-empty").returncode == 0
    yield url
    cleaner = RedisStore(url)
    cleaner.drop_everything()
    cleaner.close()


def cli(tmp_path, url, *args):
    env = {**os.environ, "PI_RUNTIME_DIR": str(tmp_path / "state"), "PI_STORE_URL": url}
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)


def test_status_workflows_and_locks_on_redis(tmp_path, url):
    cfg = make_config(tmp_path / "state", timeout_ms=30_000, store=url)
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="remote-1") as rt:
        held = rt.permit("p")
        rt.workflows.claim("wf-r")
        rt.locks.try_acquire("res", ttl=60)
        rt.instances.heartbeat()
        view = json.loads(cli(tmp_path, url, "pi-xi", "status", "--json").stdout)
        (inst,) = view["instances"]
        assert view["store"].startswith("redis://127.0.0.1:6379/0")
        assert inst["instanceId"] == "remote-1" and inst["activeRequests"] == 1
        assert inst["workflows"] == ["wf-r"] and inst["locks"] == ["res"]
        claim = cli(tmp_path, url, "pi-xi", "workflow", "claim", "wf-r", "--instance",
                    "remote-1", "--json")
        assert json.loads(claim.stdout)["action"] == "owned"
        assert json.loads(cli(tmp_path, url, "pi-xi", "locks", "--json").stdout)[0][
            "holder"] == "remote-1"
        limits = json.loads(cli(tmp_path, url, "pi-xi", "limits", "--json").stdout)
        effective = limits["providers"]["p"]["effective"]
        assert limits["shared"] and effective["activeRequests"] == 1
        assert effective["requestsPerMinute"] == 6000 and effective["currentUsage"] == 1
        held.release()


def test_an_unreachable_redis_is_one_named_line(tmp_path):
    out = cli(tmp_path, "redis://127.0.0.1:1/0", "pi-xi", "status")
    assert out.returncode == 1
    assert out.stderr.startswith("pi-xi: Redis at redis://127.0.0.1:1/0 is unreachable")
    assert "Traceback" not in out.stderr


def test_a_new_prefix_is_declared_empty_once(tmp_path):
    url = f"redis://127.0.0.1:6379/0?prefix=pi-cli-{uuid.uuid4().hex[:12]}:"
    try:
        first = cli(tmp_path, url, "pi-xi", "store", "declare-empty")
        assert first.returncode == 0, first.stderr
        assert "declared new and empty" in first.stdout
        again = cli(tmp_path, url, "pi-xi", "store", "declare-empty")
        assert again.returncode == 1 and "already in use" in again.stderr
    finally:
        cleaner = RedisStore(url)
        cleaner.drop_everything()
        cleaner.close()


def test_declare_empty_is_only_for_redis(tmp_path):
    out = cli(tmp_path, f"sqlite://{tmp_path / 'state'}", "pi-xi", "store", "declare-empty")
    assert out.returncode == 2 and "only a Redis store" in out.stderr


def test_a_lock_named_with_a_tab_queues_and_cleans_up_on_redis(tmp_path, url):
    # issue 14, item 4: "job\tx" once split its queue entries at the tab: the first waiter
    # could never leave the queue, every later waiter stayed queued for good, and
    # `pi-xi locks cleanup` freed nothing for them
    name = "job\tx\n:/ \u00e9"
    cfg = make_config(tmp_path / "state", timeout_ms=30_000, store=url)
    rts = {n: Runtime.start(cwd=tmp_path, config=cfg, instance_id=n) for n in "abc"}
    got: dict[str, int] = {}

    def wait(who: str) -> None:
        with rts[who].locks.hold(name, ttl=30, timeout=30) as held:
            got[who] = held.token

    try:
        first = rts["a"].locks.try_acquire(name, ttl=1)
        b = threading.Thread(target=wait, args=("b",))
        b.start()
        store = rts["a"].store
        for _ in range(2000):  # until it is queued
            if store.client.zcard(f"{store.prefix}lq:{name}") >= 1:
                break
            time.sleep(0.005)
        c = threading.Thread(target=wait, args=("c",))
        c.start()
        for _ in range(2000):  # until it is queued
            if store.client.zcard(f"{store.prefix}lq:{name}") >= 2:
                break
            time.sleep(0.005)
        time.sleep(1.2)  # a's lock expires; a never releases it
        freed = json.loads(cli(tmp_path, url, "pi-xi", "locks", "cleanup", "--json").stdout)
        assert freed["freed"] in ([name], [])  # (or a waiter took it over first)
        b.join(40)
        c.join(40)
        assert got == {"b": first.token + 1, "c": first.token + 2}
        assert store.client.hlen(f"{store.prefix}lqt") == 0  # nobody left queued
    finally:
        for rt in rts.values():
            rt.close()
