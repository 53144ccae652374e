"""Reaching Redis: URLs, bounded retries surfaced as store_unavailable, start-up checks."""

from __future__ import annotations

import pytest
import redis

from cross_instance.errors import ConfigError, StoreError, StoreUnavailable
from cross_instance.stores.redis.connection import (
    call,
    check_server,
    connect,
    parse_url,
    server_time_us,
)
from tests.redis.private_server import free_port, private_redis


def test_urls():
    loc = parse_url("redis://user:secret@example.com:6380/2?prefix=team-a:")
    assert loc.prefix == "team-a:" and loc.url == "redis://user:secret@example.com:6380/2"
    assert "secret" not in loc.where and "***" in loc.where
    assert parse_url("rediss://h").prefix == "pi:" and parse_url("rediss://h").functions
    assert not parse_url("redis://h?lua=scripts&prefix=x:").functions
    assert parse_url("unix:///run/redis.sock?db=3").url == "unix:///run/redis.sock?db=3"
    for bad, problem in [("http://h", "unsupported scheme"), ("redis://", "no host"),
                         ("redis://h:99999", "port"), ("redis://h/x", "database"),
                         ("redis://h?prefix=a b", "key prefix"), ("redis://h?pool=1", "unknown"),
                         ("redis://h?lua=eval", "lua must be"),
                         ("unix://", "unix:///path"), ("", "expected a URL")]:
        with pytest.raises(ConfigError, match=problem):
            parse_url(bad)
    with pytest.raises(ConfigError) as err:
        parse_url("redis://u:hunter2@h:0")
    assert "hunter2" not in str(err.value)


def test_unreachable_server_is_a_retryable_named_error():
    loc = parse_url(f"redis://127.0.0.1:{free_port()}/0")
    client = connect(loc, retry_for_s=0.5, socket_timeout_s=0.5)
    with pytest.raises(StoreUnavailable) as err:
        call(loc, client.ping)
    assert err.value.retryable and err.value.code == "store_unavailable"
    assert f"127.0.0.1:{loc.url.split(':')[2].split('/')[0]}" in str(err.value)


class _CallbacksNeverRun(redis.Connection):
    """A redis-py whose connections take connect callbacks but never run them: what the
    lane would meet if redis-py changed that internal."""

    def register_connect_callback(self, callback):  # type: ignore[no-untyped-def]
        pass


def _paused_call_fails(port, lane):
    """A call to a server that stopped answering ends after the timeout, saying so."""
    import time

    assert lane.run("heartbeat", "pi:", "", "nobody", "", "") == 0
    redis.Redis(port=port).execute_command("CLIENT", "PAUSE", 5000, "ALL")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no answer within the socket timeout"):
        lane.run("heartbeat", "pi:", "", "nobody", "", "")
    assert 0.3 <= time.monotonic() - started < 4


@pytest.mark.parametrize("path", ["kernel", "python", "callbacks never run"])
def test_a_server_that_stops_answering_is_given_up_on_after_the_socket_timeout(tmp_path, path):
    """The store's connections keep their timeout in the kernel (lane.py) where redis-py
    lets them, checked on the first connection; else Python's. Either way a paused server
    still ends a call after the timeout and the bounded retries, with an error saying so."""
    import socket
    import sys

    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    from cross_instance.stores.redis.lane import ScriptLane

    with private_redis(tmp_path) as port:
        loc = parse_url(f"redis://127.0.0.1:{port}/0")
        if path == "callbacks never run":
            client = redis.Redis.from_url(
                loc.url, connection_class=_CallbacksNeverRun, socket_timeout=0.3,
                socket_connect_timeout=0.3, retry=Retry(ExponentialBackoff(0.5, 0.02), 1),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError])
        else:
            client = connect(loc, retry_for_s=0.5, socket_timeout_s=0.3)
        lane = ScriptLane(client, ("heartbeat",), loc, kernel_timeout=path != "python")
        lane.prepare()
        sock = lane._idle[0]._sock
        if path == "kernel" and sys.platform == "linux":
            assert lane.timeout_path == "kernel" and lane.timeout_fallback is None
            assert sock.gettimeout() is None
        else:
            assert lane.timeout_path == "python"
            if path == "python":
                assert lane.timeout_fallback is None
            else:  # a dependency that changed is said, not silently lost
                assert "connect callback" in lane.timeout_fallback
        if lane.timeout_path == "python":
            lane.run("heartbeat", "pi:", "", "nobody", "", "")  # reconnected after the check
            assert lane._idle[0]._sock.gettimeout() == 0.3
            assert lane._idle[0]._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16) \
                == bytes(16)
        _paused_call_fails(port, lane)
        lane.close()
        client.close()


def test_a_timeout_the_kernel_rounds_to_its_tick_still_counts_as_kept():
    import sys

    from cross_instance.stores.redis.lane import ScriptLane

    loc = parse_url("redis://127.0.0.1:6379/0")
    client = connect(loc, socket_timeout_s=0.123456)  # kept as 0.124 s with a 4 ms tick
    lane = ScriptLane(client, ("heartbeat",), loc)
    lane.prepare()
    assert lane.timeout_path == ("kernel" if sys.platform == "linux" else "python")
    assert lane.timeout_fallback is None
    lane.close()
    client.close()


def test_eviction_is_refused_and_no_persistence_is_announced(tmp_path):
    with private_redis(tmp_path) as port:
        loc = parse_url(f"redis://127.0.0.1:{port}/0")
        client = connect(loc)
        warnings = check_server(loc, client)
        assert len(warnings) == 1 and "persistence off" in warnings[0]
        assert server_time_us(loc, client) > 1_700_000_000_000_000
        client.config_set("appendonly", "yes")
        assert check_server(loc, client) == []
        client.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(StoreError, match="maxmemory-policy allkeys-lru"):
            check_server(loc, client)
        client.close()


def test_the_shared_redis_is_usable():
    loc = parse_url("redis://127.0.0.1:6379/0")
    client = connect(loc)
    try:
        check_server(loc, client)  # a missing server raises StoreUnavailable, naming it
    finally:
        client.close()


def test_refused_credentials_are_named_and_not_retryable(tmp_path):
    from cross_instance.stores.redis.store import RedisStore

    with private_redis(tmp_path) as port:
        admin = redis.Redis(port=port)
        admin.acl_setuser("agent", enabled=True, passwords=["+right"], keys=["*"],
                          commands=["+@all"])
        with pytest.raises(StoreError) as err:
            RedisStore(f"redis://agent:wrong@127.0.0.1:{port}/0", retry_for_s=0.5)
        assert not isinstance(err.value, StoreUnavailable)
        assert "refused the credentials" in str(err.value) and "wrong" not in str(err.value)
        admin.close()


def test_the_retry_budget_is_time_whatever_the_backoff():
    from cross_instance.stores.redis.connection import retry_attempts

    def doubling(n: int) -> float:
        return min(0.25, 0.02 * 2 ** n)

    for budget in (0.01, 0.3, 1.0, 5.0, 30.0):
        n = retry_attempts(budget, doubling)
        spent = sum(doubling(k) for k in range(1, n + 1))
        assert spent >= budget and spent - doubling(n) < budget, (budget, n)
    assert retry_attempts(0.0, doubling) == 1  # a budget of nothing still tries once more
