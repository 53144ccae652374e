"""Managed Redis: an account without ``CONFIG`` (ACL users without ``@admin``, services that
disable the command) still gets the store, with the eviction policy read from ``INFO``; the
smallest ACL docs/redis.md documents runs a real round trip, with functions and with
scripts."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import redis

from cross_instance.errors import StoreError
from cross_instance.runtime import Runtime
from cross_instance.stores.redis.connection import check_server, connect, parse_url
from cross_instance.stores.redis.store import RedisStore
from tests.helpers_runtime import make_config
from tests.redis.private_server import private_redis

DOC = (Path(__file__).parents[2] / "docs" / "redis.md").read_text()
# the ACL documented in docs/redis.md, checked to be there, and the
# two halves of it that suffice with functions alone or with scripts alone
DATA = ("resetkeys ~pi:* resetchannels &pi:* -@all +@read +@write -@dangerous -function|delete "
        "-function|flush -function|restore +time +info +ping +publish +subscribe")
ACL_FUNCTIONS = f"{DATA} +fcall +function|list"
ACL_SCRIPTS = f"{DATA} +evalsha +script|load"
ACL_BOTH = f"{DATA} +fcall +function|list +evalsha +script|load"


def _user(port: int, rules: str, name: str = "agent") -> str:
    admin = redis.Redis(port=port)
    admin.execute_command("ACL", "SETUSER", name, "reset", "on", ">s3cret", *rules.split())
    admin.close()
    return f"redis://{name}:s3cret@127.0.0.1:{port}/0"


def _round_trip(tmp: Path, url: str) -> tuple[bool, list[str]]:
    """Register, permit, lock, claim and write a workflow, status: (functions used, warnings)."""
    cfg = make_config(tmp / "state", timeout_ms=30_000, store=url)
    with Runtime.start(cwd=tmp, config=cfg, instance_id="managed-1") as rt:
        with rt.permit("p"):
            pass
        with rt.locks.hold("repo:main", ttl=30) as held:
            held.ensure()
        with rt.workflows.hold("wf-1") as wf:
            wf.write(step=1)
            assert wf.epoch > 0
        assert [i["instanceId"] for i in rt.status()["instances"]] == ["managed-1"]
        store = rt.store
        assert isinstance(store, RedisStore)
        # announcements allowed
        assert rt._slots.freed is not None and rt._slots.freed.refused is None
        return store._lane.library is not None, list(store.warnings)


def test_the_documented_acl_is_in_the_readme():
    assert f"ACL SETUSER pi-agent on >PASSWORD {ACL_BOTH}" in " ".join(DOC.split())


@pytest.mark.parametrize(("rules", "functions"), [
    (ACL_FUNCTIONS, True), (ACL_SCRIPTS, False), (ACL_BOTH, True)])
def test_the_smallest_acl_runs_the_store_without_config(tmp_path, rules, functions):
    with private_redis(tmp_path) as port:
        url = _user(port, rules)
        agent = redis.Redis.from_url(url)
        for refused in (lambda: agent.config_get("maxmemory-policy"), agent.flushall,
                        agent.function_flush, lambda: agent.set("other:key", 1)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                refused()
        agent.close()
        used_functions, warnings = _round_trip(tmp_path, url)
        assert used_functions is functions
        assert any("may have persistence off" in w and "CONFIG GET" in w for w in warnings)
        assert not any("s3cret" in w for w in warnings)


def test_each_part_of_the_acl_is_needed(tmp_path):
    """Without any one of its data rules the store cannot run; without the function rules it
    runs as scripts (and the other way round)."""
    with private_redis(tmp_path) as port:
        for i, rule in enumerate(["+@read", "+@write", "+time", "+info"]):
            url = _user(port, ACL_BOTH.replace(f" {rule}", ""), f"agent{i}")
            with pytest.raises(StoreError):
                _round_trip(tmp_path / str(i), url)
        url = _user(port, ACL_FUNCTIONS.replace(" +fcall", ""), "nofcall")
        with pytest.raises(StoreError, match="fcall"):
            _round_trip(tmp_path / "f", url)
        url = _user(port, ACL_SCRIPTS.replace(" +script|load", ""), "noload")
        with pytest.raises(StoreError, match="script"):
            _round_trip(tmp_path / "s", f"{url}?lua=scripts")


def test_eviction_is_refused_when_read_from_info(tmp_path):
    with private_redis(tmp_path) as port:
        loc = parse_url(_user(port, ACL_BOTH))
        client = connect(loc)
        admin = redis.Redis(port=port)
        admin.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(StoreError, match="maxmemory-policy allkeys-lru"):
            check_server(loc, client)
        with pytest.raises(StoreError, match="maxmemory-policy allkeys-lru"):
            RedisStore(loc.url)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("appendonly", "yes")
        assert check_server(loc, client) == []  # AOF on: nothing to warn about
        client.close()
        admin.close()


def test_a_server_without_config_is_read_through_info(tmp_path):
    """A managed service that disables CONFIG (here renamed away) for every account."""
    with private_redis(tmp_path, "--rename-command", "CONFIG", "",
                       "--maxmemory-policy", "volatile-ttl", declare=False) as port:
        loc = parse_url(f"redis://127.0.0.1:{port}/0")
        client = connect(loc)
        with pytest.raises(StoreError, match="maxmemory-policy volatile-ttl"):
            check_server(loc, client)
        client.close()
    with private_redis(tmp_path, "--rename-command", "CONFIG", "") as port:
        loc = parse_url(f"redis://127.0.0.1:{port}/0")
        client = connect(loc)
        warnings = check_server(loc, client)
        assert len(warnings) == 1 and "may have persistence off" in warnings[0]
        client.close()


def test_a_policy_that_cannot_be_read_is_refused(tmp_path):
    """Neither CONFIG GET nor INFO: the store does not start, and says what to allow."""
    with private_redis(tmp_path) as port:
        url = _user(port, ACL_BOTH.replace(" +info", ""))
        with pytest.raises(StoreError) as err:
            RedisStore(url)
        text = str(err.value)
        assert "eviction policy" in text and "+info" in text and "+config|get" in text
        assert "s3cret" not in text and re.search(r"agent:\*\*\*@", text)


def test_without_the_channel_waiters_poll_and_the_start_says_so(tmp_path):
    """An account without the channel rules: no announcement is published or received (the
    Lua step's PUBLISH is refused quietly, the release still happens), the start-up log says
    what to allow, and a waiter still gets its slot."""
    import threading

    rules = ACL_BOTH.replace(" &pi:*", "").replace(" +publish +subscribe", "")
    with private_redis(tmp_path) as port:
        url = _user(port, rules)
        cfg = make_config(tmp_path / "state", timeout_ms=30_000, store=url, total=1)
        with Runtime.start(cwd=tmp_path, config=cfg, instance_id="managed-1") as rt:
            assert rt._slots.freed is not None and rt._slots.freed.refused is not None
            assert "+publish +subscribe" in rt._slots.freed.refused
            assert not rt._slots._announced()
            held = rt.permit("p")
            got: list[object] = []
            waiter = threading.Thread(target=lambda: got.append(rt.permit("p", timeout=60)))
            waiter.start()
            end = time.monotonic() + 60
            while rt._slots.wake.waiting == 0:  # the waiter queued
                assert time.monotonic() < end
                time.sleep(0.01)
            held.release()
            waiter.join(60)
            assert len(got) == 1
            got[0].release()  # type: ignore[attr-defined]
            assert rt._slots.freed.received == 0
        log = (tmp_path / ".pi" / "logs" / "coordinator.log").read_text()
        assert "refuses PUBLISH or SUBSCRIBE" in log and "s3cret" not in log
