"""``.pi/logs/coordinator.log``: what the coordinator decided, written off the hot path.

A log call only appends ``(time, template, args)`` to a deque; a daemon thread formats the
pending lines every 100 ms and writes them with one ``write`` on an ``O_APPEND`` descriptor.
Several instances in one working directory share the file: appends do not interleave within a
batch, and rotation (5 MB, 5 files kept) happens under an ``flock`` after re-checking the size,
so two processes never rotate the same file twice; a writer whose file was rotated by another
process reopens the new one. (``logging.handlers.RotatingFileHandler`` assumes one process.)
Lines read like the user guide::

    [2026-02-25 02:00:00] Instance analyzer-1 requested 1 request (openai)
    [2026-02-25 02:00:01] Approved: 121/500 requests used
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # native Windows: rotation unlocked (two writers may both rotate)
    fcntl = None  # type: ignore[assignment]

_DATEFMT = "%Y-%m-%d %H:%M:%S"
MAX_BYTES = 5_000_000
BACKUPS = 5


class SharedRotatingFile:
    """An append-only file that any number of processes write and rotate safely."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, data: bytes) -> None:
        try:
            mine = os.fstat(self._fd)
            current = os.stat(self.path)
            if (mine.st_ino, mine.st_dev) != (current.st_ino, current.st_dev):
                raise FileNotFoundError  # rotated by another process: follow it
        except FileNotFoundError:
            os.close(self._fd)
            self._fd = self._open()
            mine = os.fstat(self._fd)
        if mine.st_size + len(data) > self.max_bytes:
            self._rotate()
        os.write(self._fd, data)

    def _rotate(self) -> None:
        if fcntl is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            try:
                size = os.stat(self.path).st_size
            except FileNotFoundError:
                size = 0
            if size > self.max_bytes // 2:  # nobody rotated it meanwhile
                for i in range(self.backups - 1, 0, -1):
                    older = Path(f"{self.path}.{i}")
                    if older.exists():
                        os.replace(older, f"{self.path}.{i + 1}")
                os.replace(self.path, f"{self.path}.1")
            os.close(self._fd)
            self._fd = self._open()
        finally:
            if fcntl is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._lock_fd)


class LineLog:
    """One log file, fed from any thread; ``flush()`` writes what is pending now."""

    def __init__(self, path: Path | None, name: str) -> None:
        self.path = path
        self._pending: collections.deque[tuple[float, str, tuple[object, ...]]] = (
            collections.deque(maxlen=100_000))
        self._file: SharedRotatingFile | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        if path is not None:
            try:
                self._file = SharedRotatingFile(path)
            except OSError:
                self.path = None  # unwritable cwd: run without a log file rather than fail
            else:
                threading.Thread(target=self._run, name=f"pi-xi-{name}-log",
                                 daemon=True).start()
                atexit.register(self.close)

    def __call__(self, template: str, *args: object) -> None:
        if self._file is not None:
            self._pending.append((time.time(), template, args))

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.flush()

    def flush(self) -> None:
        """Format everything pending and append it as one block."""
        with self._lock:
            if not self._pending or self._file is None:
                return
            lines = []
            stamp_second, stamp = -1, ""
            while self._pending:
                created, template, args = self._pending.popleft()
                second = int(created)
                if second != stamp_second:
                    stamp_second = second
                    stamp = time.strftime(_DATEFMT, time.localtime(second))
                lines.append(f"[{stamp}] {template % args if args else template}\n")
            try:
                self._file.write("".join(lines).encode("utf-8", "replace"))
            except OSError:
                pass  # a full disk must not stop coordination; the lines are dropped

    def close(self) -> None:
        self._stop.set()
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def log_path(cwd: Path, name: str) -> Path:
    return cwd / ".pi" / "logs" / f"{name}.log"
