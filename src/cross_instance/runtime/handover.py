"""Doorbells: a release wakes the slot waiters of the other processes on this host at once.

Every process of one store on one host that has a waiter for a slot keeps a Unix datagram
socket named ``w-<random>`` in a directory shared by those processes (one directory per store,
under ``/tmp/pi-xi-<uid>/``, short enough for the socket path limits of Linux and macOS). Once
it stops waiting the socket is renamed ``i-<random>`` (idle, lazily: see ``set_waiting``; it
stays bound, so the next wait costs one rename). A process that frees slots looks for ``w-``
sockets (a cached directory scan), sends each a datagram saying how many slots came free, and
that process wakes as many of its waiters, earliest ticket first (``acquire.Wake``).

What is promised: a doorbell only hurries a waiter. A lost or late datagram (full buffer, a
directory nobody can create, a process that was renaming its socket) costs the waiter its
safety poll, never a grant; the store alone decides who is granted. A process that dies leaves
a socket file nobody listens on: the first ring that meets it (``ECONNREFUSED``) removes it,
and every new doorbell sweeps the directory once, so stale files break nothing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cross_instance.hostfacts import identity as hostinfo

if TYPE_CHECKING:
    from cross_instance.stores.base import Store

WAITING, IDLE = "w-", "i-"
RECHECK_S = 0.001  # who waits is looked up again at most this often (a release costs no syscall)
SCAN_MAX_AGE_S = 0.005  # a directory scan is reused while the directory is unchanged and younger
_STOP = b"stop"
LISTEN_CHECK_S = 1.0  # the listener looks whether its doorbell was closed at least this often
_GONE = (errno.ECONNREFUSED, errno.ENOTSOCK)  # nobody listens there: a stale file
_BUSY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)  # its queue is full: it is awake


def directory_for(store: Store) -> Path:
    """The doorbell directory of ``store`` (its URL and key prefix) on this host (by name:
    ``PI_XI_HOSTNAME`` makes a process another host's, see ``hostfacts.system``). It is
    created, private to this user, when a process first waits (and removed by the last
    doorbell that closes); one that is not private is not used (then waiters only poll)."""
    key = f"{store.url}\0{store.prefix}\0{hostinfo.hostname()}"
    if os.path.isdir("/tmp"):
        base = Path("/tmp")
    else:
        import tempfile

        base = Path(tempfile.gettempdir())
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    return base / f"pi-xi-{os.getuid()}" / digest


def _private(d: Path) -> bool:
    """Create ``d`` for this user only, or check that it is so."""
    try:
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        info = os.lstat(d)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()  # not a symlink, ours


class Doorbell:
    """This process's doorbell in ``directory``: ``on_ring(n)`` runs (in a thread of its own)
    when another process says ``n`` slots came free. Thread-safe."""

    def __init__(self, directory: Path, on_ring: Callable[[int], object]) -> None:
        self.directory = directory
        self._on_ring = on_ring
        self._token = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None  # bound lazily, at the first wait
        self._thread: threading.Thread | None = None
        self._name = ""  # the current file name of our socket ("" before the first wait)
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._scan: tuple[int, float, list[str]] = (-1, 0.0, [])  # (dir mtime, at, names)
        self._checked = 0.0  # when the directory was last looked at
        self._closed = False
        self._waiting: Callable[[], bool] = lambda: False  # whether this process waits now
        self.rings_sent = 0
        self.rings_received = 0

    # --- the waiting side -----------------------------------------------------------------
    def set_waiting(self, waiting: Callable[[], bool]) -> None:
        """Show this process as waiting when ``waiting()`` says so now (called on every
        change; the lock orders concurrent changes). Becoming idle is left to the listener:
        at the first ring that finds nobody waiting, else within ``LISTEN_CHECK_S``. (A
        rename on every change put a syscall on every hand-over, and a directory that keeps
        changing makes every releaser scan it again; a process shown waiting a little too
        long only costs a datagram it ignores.)"""
        with self._lock:
            self._waiting = waiting
            if self._closed or not waiting() or self._name.startswith(WAITING):
                return
            try:
                if self._sock is None:
                    self._bind()
                else:
                    self._rename(WAITING)
            except OSError:
                return  # no doorbell: this process's waiters poll, as before

    def _settle_idle(self) -> None:
        """Shown waiting while nobody waits here: become idle (the listener's thread)."""
        with self._lock:
            if self._closed or not self._name.startswith(WAITING) or self._waiting():
                return
            try:
                self._rename(IDLE)
            except OSError:
                pass  # it stays shown waiting: a ring now and then, ignored

    def _rename(self, prefix: str) -> None:
        new = prefix + self._token
        os.rename(self.directory / self._name, self.directory / new)
        self._name = new

    def _bind(self) -> None:
        if not (_private(self.directory.parent) and _private(self.directory)):
            raise OSError(f"doorbell directory {self.directory} is not private")
        self._sweep()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = WAITING + self._token
        try:
            sock.bind(str(self.directory / name))
        except OSError:
            sock.close()
            raise
        self._sock, self._name = sock, name
        self._thread = threading.Thread(target=self._listen, args=(sock,),
                                        name="pi-xi-doorbell", daemon=True)
        self._thread.start()

    def _listen(self, sock: socket.socket) -> None:
        sock.settimeout(LISTEN_CHECK_S)  # a stop message that cannot arrive is not waited for
        while True:
            try:
                data = sock.recv(64)
            except TimeoutError:
                if self._closed:
                    return
                self._settle_idle()
                continue
            except OSError:
                return
            if data == _STOP or self._closed:
                return
            try:
                n = int(data)
            except ValueError:
                continue  # not a doorbell message: ignored
            if n > 0:
                self.rings_received += 1
                self._on_ring(n)
                self._settle_idle()

    def _sweep(self) -> None:
        """Remove the sockets of processes that died (a probe of 0 slots wakes nobody)."""
        for name in self._names(prefixes=(WAITING, IDLE)):
            self._send(name, b"0")

    # --- the releasing side ---------------------------------------------------------------
    def others_waiting(self) -> bool:
        """Whether another process of this store on this host has a slot waiter (cheap:
        the directory is scanned again only when it changed or the scan is a few ms old)."""
        return bool(self._waiting_names())

    def ring(self, n: int) -> int:
        """Tell every other waiting process that ``n`` slots came free; how many were told."""
        told = 0
        message = str(n).encode()
        for name in self._waiting_names():
            told += self._send(name, message)
        self.rings_sent += told
        return told

    def _waiting_names(self) -> list[str]:
        now = time.monotonic()
        seen, at, names = self._scan
        if now - self._checked < RECHECK_S:
            return names
        self._checked = now
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            return []
        if mtime != seen or now - at > SCAN_MAX_AGE_S:
            names = [n for n in self._names(prefixes=(WAITING,)) if n != self._name]
            self._scan = (mtime, now, names)
        return names

    def _names(self, prefixes: tuple[str, ...]) -> list[str]:
        try:
            with os.scandir(self.directory) as it:
                return [e.name for e in it if e.name.startswith(prefixes)]
        except OSError:
            return []

    def _send(self, name: str, message: bytes) -> int:
        path = self.directory / name
        try:
            self._sender.sendto(message, str(path))
            return 1
        except OSError as err:
            if err.errno in _GONE and name != self._name:
                try:
                    path.unlink()  # nobody listens there: its process is gone
                except OSError:
                    pass
                self._scan, self._checked = (-1, 0.0, []), 0.0
            return 0  # _BUSY: it has wake-ups queued already; ENOENT: it just went idle

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sock, name = self._sock, self._name
            self._sock = None
        if sock is not None:
            try:
                self._sender.sendto(_STOP, str(self.directory / name))
            except OSError:
                pass  # its file is gone: the listener notices within LISTEN_CHECK_S
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=1)
            sock.close()
            try:
                (self.directory / name).unlink()
            except OSError:
                pass
            try:
                os.rmdir(self.directory)  # only if this was the last doorbell of the store
            except OSError:
                pass
        self._sender.close()
