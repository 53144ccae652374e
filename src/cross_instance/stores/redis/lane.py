"""Calling the store's scripts: the path every permit takes, so it is kept short.

redis-py's generic command path (pool checkout, retry wrapper, event dispatch, metrics) costs
more per call than the server spends deciding a permit. Here a thread takes an idle
connection of this store's own (a list pop, atomic under the GIL), sends one ``EVALSHA`` and
reads the reply. What redis-py's path promised still holds:

- a dropped connection is retried with the client's bounded backoff, then the error is raised
  (``connection.call`` turns it into ``StoreUnavailable``); a call resent after a lost reply is
  safe because every operation is idempotent by the ids the client chose;
- a script the server no longer has (a restart, ``SCRIPT FLUSH``) is loaded again and the call
  sent once more;
- connections come from the client's pool settings (URL, TLS, credentials, timeouts, health
  checks) and are closed with the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from cross_instance.stores.redis import scripts


class ScriptLane:
    """Runs the named scripts (``run(name, *args)``) on connections owned by this lane."""

    def __init__(self, client: Any, names: Iterable[str]) -> None:
        import redis

        self._no_script = redis.exceptions.NoScriptError
        self._answered = redis.exceptions.ResponseError  # an error reply: the connection is fine
        self._retryable = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._pool = client.connection_pool
        self._retry = client.get_retry()
        self._idle: list[Any] = []
        self._all: list[Any] = []
        self._scripts = {name: scripts.source(name) for name in names}
        self._sha = {name: hashlib.sha1(text.encode("utf-8")).hexdigest()
                     for name, text in self._scripts.items()}

    def run(self, name: str, *args: Any) -> Any:
        """The reply of script ``name`` called with ``args`` (no keys: scripts name their own
        keys from the prefix, which every caller passes first)."""
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._pool.make_connection()
            self._all.append(conn)
        try:
            try:
                return self._once(conn, name, args)
            except self._retryable:
                conn.disconnect()
                if self._retry is None:
                    raise
                return self._retry.call_with_retry(lambda: self._once(conn, name, args),
                                                   lambda _err: conn.disconnect())
        except BaseException as err:
            if not isinstance(err, self._answered):  # cut off mid-call: its state is unknown
                conn.disconnect()
            raise
        finally:
            self._idle.append(conn)

    def _once(self, conn: Any, name: str, args: tuple[Any, ...]) -> Any:
        try:
            conn.send_command("EVALSHA", self._sha[name], 0, *args)
            return conn.read_response()
        except self._no_script:
            conn.send_command("SCRIPT", "LOAD", self._scripts[name])
            conn.read_response()
            conn.send_command("EVALSHA", self._sha[name], 0, *args)
            return conn.read_response()

    def close(self) -> None:
        for conn in self._all:
            conn.disconnect()
        self._idle.clear()
        self._all.clear()
