"""Calling the store's Lua operations: the path every permit takes, so it is kept short.

redis-py's generic command path (pool checkout, retry wrapper, event dispatch, metrics) costs
more per call than the server spends deciding a permit. Here a thread takes an idle
connection of this store's own (a list pop, atomic under the GIL), sends one ``FCALL`` (or
``EVALSHA``) and reads the reply. What redis-py's path promised still holds:

- a dropped connection is retried with the client's bounded backoff, then the error is raised
  as ``StoreUnavailable``; a call resent after a lost reply is
  safe because every operation is idempotent by the ids the client chose;
- code the server no longer has (a restart, ``FUNCTION FLUSH``, ``SCRIPT FLUSH``) is loaded
  again and the call sent once more;
- connections come from the client's pool settings (URL, TLS, credentials, timeouts, health
  checks) and are closed with the store; a forked child never touches its parent's: it opens
  its own on first use, as redis-py's pool does;
- a server that stops answering is given up on after the client's socket timeout, and the call
  ends with ``StoreUnavailable`` ("no answer within the socket timeout"). On a plain TCP or
  Unix socket the kernel keeps that timeout (``SO_RCVTIMEO``/``SO_SNDTIMEO``) and the socket
  blocks: a Python socket timeout polls the socket before every send and every receive, two
  system calls more per permit (about 4 % of a permit cycle on loopback). Putting the timeout
  in the kernel needs two things redis-py does not promise (its connect callbacks and the
  connection's ``_sock``), so ``prepare`` checks on the first connection that the kernel
  really keeps it; if not (another redis-py, TLS, Windows), Python's timeout stays, the same
  behaviour a little slower, and ``timeout_path``/``timeout_fallback`` say which and why.

The operations run as a function library where the server allows it (Redis 7+: nothing is
defined per call); a server without ``FUNCTION``, or an account not allowed to load one, gets
the same operations as scripts (see ``scripts``), decided when the store opens and logged by
it.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from cross_instance.stores.redis import scripts
from cross_instance.stores.redis.connection import RedisLocation, store_error

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # redis[hiredis] brings it; without it, redis-py's own packer
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover
    _pack = None


class ScriptLane:
    """Runs the named scripts (``run(name, *args)``) on connections owned by this lane."""

    def __init__(self, client: Any, names: Iterable[str], location: RedisLocation, *,
                 functions: bool = True, kernel_timeout: bool = True) -> None:
        import redis

        self._location = location

        self._no_script = redis.exceptions.NoScriptError
        self._answered = redis.exceptions.ResponseError  # an error reply: the connection is fine
        self._no_permission = redis.exceptions.NoPermissionError
        self._retryable = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._pool = client.connection_pool
        self._retry = client.get_retry()
        self._idle: list[Any] = []
        self._all: list[Any] = []
        self.library: scripts.Library | None = (scripts.library(tuple(names)) if functions
                                                 else None)
        self.fallback: str | None = None  # why scripts are used although functions were asked
        # "kernel" once prepare() saw the kernel keep the socket timeout, else "python"
        self.timeout_path = "python"
        self.timeout_fallback: str | None = None  # why not "kernel" where it was expected
        self._kernel = kernel_timeout and sys.platform != "win32"  # its SO_RCVTIMEO differs
        me = weakref.ref(self)
        if hasattr(os, "register_at_fork"):  # POSIX only (no fork on Windows)
            os.register_at_fork(after_in_child=lambda: _forget_in_child(me))

    def prepare(self) -> None:
        """Load the function library now if the server lacks it (one start-up round trip),
        so a server that cannot have it is known, and said, before the first permit; then
        check on that live connection where its socket timeout is kept."""
        conn = self._take()
        try:
            if self.library is None:
                conn.send_command("PING")
                conn.read_response()
            else:
                try:
                    conn.send_command("FUNCTION", "LIST", "LIBRARYNAME", self.library.name)
                    if not conn.read_response():
                        self._load(conn, self.library, Exception("Function not found"))
                except self._answered as err:
                    if not self._refused(err):
                        raise
                    self._fall_back(err)
            self._check_timeout(conn)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self._idle.append(conn)

    def _take(self) -> Any:
        try:
            return self._idle.pop()
        except IndexError:
            conn = self._pool.make_connection()
            register = getattr(conn, "register_connect_callback", None)
            if self._kernel and register is not None:  # without it, _check_timeout says so
                register(self._kernel_timeout)
            self._all.append(conn)
            return conn

    def _kernel_timeout(self, conn: Any) -> None:
        """After each (re)connect: the connection's socket timeout kept by the kernel on a
        blocking socket (see the module's promises). TLS sockets keep Python's timeout."""
        sock, timeout = getattr(conn, "_sock", None), conn.socket_timeout
        if not self._kernel or type(sock) is not socket.socket or not timeout:
            return
        value = _timeval(timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        sock.settimeout(None)

    def _check_timeout(self, conn: Any) -> None:
        """Whether the kernel keeps ``conn``'s socket timeout (just connected): if it was
        meant to and does not, Python's timeout from now on, and the reason kept."""
        sock, timeout = getattr(conn, "_sock", None), getattr(conn, "socket_timeout", None)
        if not self._kernel or not timeout:
            return
        if sock is not None and type(sock) is not socket.socket:  # TLS: Python's, by design
            return
        why = None
        if sock is None:
            why = "redis-py's connection does not expose its socket (_sock)"
        elif sock.gettimeout() is not None:
            why = "redis-py did not run the connect callback that sets it"
        else:
            kept = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                                       len(_timeval(timeout))))
            if abs(kept[0] + kept[1] / 1e6 - timeout) > 0.011:  # the kernel rounds to its tick
                why = f"the kernel keeps SO_RCVTIMEO {kept[0] + kept[1] / 1e6:g} s"
        if why is None:
            self.timeout_path = "kernel"
            return
        self._kernel = False
        self.timeout_fallback = why
        for each in self._all:  # they reconnect with redis-py's own (Python) timeout
            each.disconnect()

    def run(self, name: str, *args: Any) -> Any:
        """The reply of operation ``name`` called with ``args`` (no keys: operations name
        their own keys from the prefix, which every caller passes first). Redis errors come
        out as the store's (``StoreUnavailable`` once the retries are spent)."""
        conn = self._take()
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
            mapped = store_error(self._location, err) if isinstance(err, Exception) else None
            if mapped is None:
                raise
            raise mapped from err
        finally:
            self._idle.append(conn)

    def _once(self, conn: Any, name: str, args: tuple[Any, ...]) -> Any:
        library = self.library
        if library is not None:
            function = library.functions[name]
            try:
                self._send(conn, ("FCALL", function, 0, *args))
                return conn.read_response()
            except self._answered as err:
                if not str(err).startswith(("Function not found", "unknown command")):
                    raise  # the operation's own error
                if self._load(conn, library, err):
                    self._send(conn, ("FCALL", function, 0, *args))
                    return conn.read_response()
        sha = scripts.digest(name)
        try:
            self._send(conn, ("EVALSHA", sha, 0, *args))
            return conn.read_response()
        except self._no_script:
            conn.send_command("SCRIPT", "LOAD", scripts.source(name))
            conn.read_response()
            self._send(conn, ("EVALSHA", sha, 0, *args))
            return conn.read_response()

    @staticmethod
    def _send(conn: Any, command: tuple[Any, ...]) -> None:
        """Send one command packed by hiredis, as redis-py's own packer would, without its
        layers of argument copies (a permit's call has some thirty arguments)."""
        if _pack is None:
            conn.send_command(*command)
        else:
            conn.send_packed_command((_pack(command),))

    def _load(self, conn: Any, library: scripts.Library, missing: Exception) -> bool:
        """Load the library after ``missing``; False (and scripts from now on) if this server
        or this account cannot have it."""
        if not str(missing).startswith("unknown command"):
            try:
                conn.send_command("FUNCTION", "LOAD", library.text)
                conn.read_response()
                return True
            except self._answered as err:
                if str(err).startswith("Library") and "already exists" in str(err):
                    return True  # another client loaded it first
                if not self._refused(err):
                    raise
                missing = err
        self._fall_back(missing)
        return False

    def _fall_back(self, why: Exception) -> None:
        """Scripts from now on: the server or this account cannot have the library."""
        self.library, self.fallback = None, str(why)

    def _refused(self, err: Exception) -> bool:
        """The server or this account cannot have function libraries."""
        return isinstance(err, self._no_permission) or str(err).startswith("unknown command")

    def close(self) -> None:
        for conn in self._all:
            conn.disconnect()
        self._idle.clear()
        self._all.clear()


def _timeval(seconds: float) -> bytes:
    """``struct timeval`` for ``SO_RCVTIMEO``/``SO_SNDTIMEO``."""
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


def _forget_in_child(ref: weakref.ref[ScriptLane]) -> None:
    """After a fork: the parent's sockets are its own; drop them without closing them."""
    lane = ref()
    if lane is not None:
        lane._idle = []
        lane._all = []
