"""Reaching the team's Redis: URL, connection with bounded retries, and the start-up checks.

Promises:
- ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs with user, password and database from
  the URL, plus ``?prefix=`` for the key prefix (default ``pi:``) and ``?lua=scripts`` to run
  the store's operations as scripts even where function libraries would load (for proxies that
  do not pass ``FCALL``); anything else is a ``ConfigError`` naming the URL and the problem
  (the password is never echoed).
- A dropped connection is retried with exponential backoff inside redis-py for a bounded time;
  past it the caller gets ``StoreUnavailable`` (code ``store_unavailable``, retryable) naming
  the server, never a silent reconnect that re-grants anything (scripts check server state).
- At start the server must evict nothing (``maxmemory-policy noeviction``): an evicted key would
  silently drop a lease or an epoch, so any other policy is refused with a named error. The
  policy is read with ``CONFIG GET``, or from ``INFO`` where the account or a managed service
  does not allow ``CONFIG``; a server where neither tells it is refused. No persistence
  (neither RDB saves nor AOF) is allowed but announced as a warning.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cross_instance.errors import ConfigError, StoreError, StoreUnavailable

DEFAULT_PREFIX = "pi:"
_PREFIX = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class RedisLocation:
    """A parsed store URL: ``url`` for redis-py (without our query options), the key
    ``prefix``, ``where`` (the URL with any password hidden) for messages, and whether to use
    a function library (``functions``) or scripts."""

    url: str = field(repr=False)  # holds the password
    prefix: str
    where: str
    functions: bool = True


def redact(url: str) -> str:
    """``url`` fit to print: whatever stands before its last ``@`` (after ``scheme://``) is
    credentials and shown as ``user:***`` (``***`` alone without a ``:``, where redis-cli reads
    the whole as a password). Plain text work, no URL parsing, so it holds for URLs too broken
    to parse and for passwords holding ``@``, ``:``, ``/`` or ``%`` escapes; control
    characters are escaped, so it prints as one line."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _secret = rest[:at].partition(":")
        url = f"{head}{sep}{user + ':***' if colon else '***'}{rest[at:]}"
    # one line whatever the text holds
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in url)


def parse_url(url: str, source: str = "store URL") -> RedisLocation:
    """Validate a Redis store URL (``source`` names where it came from, for the error)."""
    where = redact(url) if isinstance(url, str) else repr(url)

    def bad(problem: str) -> ConfigError:
        return ConfigError(source, where, problem)

    if not isinstance(url, str) or not url:
        raise bad("expected a URL such as redis://host:6379/0")
    try:
        parts = urlsplit(url)
    except ValueError as err:  # e.g. "Invalid IPv6 URL": the text holds no secret
        raise bad(f"not a valid URL ({err}; expected redis://host:6379/0)") from None
    if "@" in url.partition("://")[2] and "@" not in parts.netloc:
        raise bad("an '@' after the host: a password holding '/', '?' or '#' must be "
                  "percent-encoded (%2F, %3F, %23)")
    if parts.scheme not in _SCHEMES:
        raise bad(f"unsupported scheme {redact(parts.scheme)!r} "
                  f"(expected one of {', '.join(_SCHEMES)})")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"prefix", "db", "lua"})
    if unknown:
        raise bad(f"unknown option {unknown[0]!r} (supported: prefix, db, lua)")
    lua = query.get("lua", ["functions"])[-1]
    if lua not in ("functions", "scripts"):
        raise bad(f"lua must be 'functions' or 'scripts', got {lua!r}")
    prefix = query.get("prefix", [DEFAULT_PREFIX])[-1]
    if not _PREFIX.fullmatch(prefix):
        raise bad(f"key prefix {prefix!r} must be 1-64 letters, digits, '_', '.', ':' or '-'")
    if parts.scheme == "unix":
        if not parts.path:
            raise bad("expected unix:///path/to/redis.sock")
    else:
        if not parts.hostname:
            raise bad("no host (expected redis://host:6379/0)")
        try:
            port = parts.port
        except ValueError:
            raise bad("the port must be a number from 1 to 65535") from None
        if port == 0:
            raise bad("the port must be a number from 1 to 65535")
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise bad(f"the database must be a number, got {db!r}")
    for db in query.get("db", []):
        if not db.isdigit():
            raise bad(f"the database must be a number, got {db!r}")
    kept = "&".join(f"db={d}" for d in query.get("db", []))
    rebuilt = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{kept}" if kept else "")
    return RedisLocation(rebuilt, prefix, redact(rebuilt), lua == "functions")


RETRY_PAUSE_CAP_S = 0.25  # short pauses: a flapping link gets many tries, not a few long waits


def retry_attempts(retry_for_s: float, pause: Callable[[int], float]) -> int:
    """How many retries the pauses ``pause(1), pause(2), ...`` fit into ``retry_for_s``
    (at least one): the budget is time, whatever the backoff's shape."""
    attempts, spent = 0, 0.0
    while spent < retry_for_s:
        attempts += 1
        spent += pause(attempts)
    return max(1, attempts)


def _timed_retry(base: Any) -> Any:
    """redis-py's ``Retry`` that also stops once ``budget_s`` has passed since the first try.
    The count of tries alone does not bound the time: against a server that accepts and never
    answers, every try waits a whole socket timeout (24 tries of 5 s were two minutes)."""

    class TimedRetry(base):  # type: ignore[misc]
        budget_s = 5.0

        def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
            deadline = time.monotonic() + self.budget_s

            def timed_fail(error: Exception, *rest: Any) -> None:
                fail(error, *rest)
                if time.monotonic() >= deadline:
                    raise error

            return super().call_with_retry(do, timed_fail, *args, **kwargs)

    return TimedRetry


def connect(location: RedisLocation, *, retry_for_s: float = 5.0,
            socket_timeout_s: float = 5.0) -> Any:
    """A redis-py client that retries dropped connections with backoff for about
    ``retry_for_s`` and then raises (mapped to ``StoreUnavailable`` by ``call``)."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    backoff = ExponentialBackoff(cap=RETRY_PAUSE_CAP_S, base=0.02)
    retry = _timed_retry(Retry)(backoff, retry_attempts(retry_for_s, backoff.compute))
    retry.budget_s = retry_for_s
    return redis.Redis.from_url(
        location.url, retry=retry, retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s,
        health_check_interval=10)


def call(location: RedisLocation, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one client call, turning redis-py's errors into the store's."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        mapped = store_error(location, err)
        if mapped is None:
            raise
        raise mapped from err


def store_error(location: RedisLocation, err: Exception) -> StoreError | None:
    """The store's error for a redis-py error (None for anything else)."""
    import redis

    if isinstance(err, redis.AuthenticationError):  # a ConnectionError, but retrying is futile
        return StoreError(f"Redis at {location.where} refused the credentials: {err}",
                          location=location.where)
    if isinstance(err, (redis.ConnectionError, redis.TimeoutError)):
        # the same words whichever keeps the timeout: Python's socket (redis-py's
        # TimeoutError) or the kernel (lane.py: EAGAIN, reported by redis-py as a socket error)
        if isinstance(err, redis.TimeoutError):
            why = f"no answer within the socket timeout ({err})"
        elif isinstance(err.__context__, BlockingIOError):
            why = "no answer within the socket timeout"
        else:
            why = str(err)
        return StoreUnavailable(f"Redis at {location.where} is unreachable: {why}",
                                location=location.where)
    if isinstance(err, redis.ResponseError):
        return StoreError(f"Redis at {location.where} answered with an error: {err}",
                          location=location.where)
    return None


def check_server(location: RedisLocation, client: Any) -> list[str]:
    """Refuse a server that may evict keys; return warnings (persistence off, or unknown).

    The settings come from ``CONFIG GET`` where the account may run it, else from ``INFO``
    (managed services and ACL users without ``@admin``: ``maxmemory_policy`` in ``INFO
    memory``, ``aof_enabled`` in ``INFO persistence``). A server whose eviction policy can be
    read from neither is refused: an evicted key drops a lease or an epoch silently, and
    nothing would show it."""
    import redis

    config: dict[str, str] = {}
    try:
        for key in ("maxmemory-policy", "save", "appendonly"):
            config.update(call(location, client.config_get, key))
    except StoreError as err:
        if not isinstance(err.__cause__, redis.ResponseError):
            raise  # unreachable, refused credentials: not a question of permissions
        return _check_by_info(location, client, err.__cause__)
    policy = config.get("maxmemory-policy", "noeviction")
    _refuse_eviction(location, policy)
    if not config.get("save", "").strip() and config.get("appendonly", "no") != "yes":
        return [_no_persistence(location, "has", "no RDB saves, no AOF")]
    return []


def _check_by_info(location: RedisLocation, client: Any, config_refused: Exception) -> list[str]:
    """``check_server`` for an account that may not run ``CONFIG GET``."""
    import redis

    try:
        memory = call(location, client.info, "memory")
        persistence = call(location, client.info, "persistence")
    except StoreError as err:
        if not isinstance(err.__cause__, redis.ResponseError):
            raise
        memory, persistence = {}, {}
    policy = memory.get("maxmemory_policy")
    if not isinstance(policy, str) or not policy:
        raise StoreError(
            f"Redis at {location.where} does not let this account read its eviction policy "
            f"(CONFIG GET: {config_refused}; INFO memory has no maxmemory_policy): an evicting "
            "server would drop leases and epochs silently, so the store does not start. Allow "
            "INFO (ACL: +info) or CONFIG GET (+config|get) for this account, and make sure "
            "maxmemory-policy is noeviction", location=location.where)
    _refuse_eviction(location, policy)
    if str(persistence.get("aof_enabled", "0")) == "1":
        return []
    return [_no_persistence(
        location, "may have",
        "AOF off; whether RDB snapshots are on cannot be read without CONFIG GET")]


def _refuse_eviction(location: RedisLocation, policy: str) -> None:
    if policy != "noeviction":
        raise StoreError(
            f"Redis at {location.where} has maxmemory-policy {policy}: it may evict leases and "
            "epochs silently; set maxmemory-policy noeviction (CONFIG SET maxmemory-policy "
            "noeviction, and in redis.conf, or the service's parameter of that name)",
            location=location.where)


def _no_persistence(location: RedisLocation, verb: str, what: str) -> str:
    return (f"Redis at {location.where} {verb} persistence off ({what}): a restart "
            "empties it, and everything held in it (leases, permits, locks, workflows) is lost")


def server_time_us(location: RedisLocation, client: Any) -> int:
    """The server clock (``TIME``) in microseconds: one clock for every host."""
    seconds, micros = call(location, client.time)
    return int(seconds) * 1_000_000 + int(micros)
