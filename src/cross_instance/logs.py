"""``.pi/logs/coordinator.log``: what the coordinator decided, written off the hot path.

A log call only appends ``(time, template, args)`` to a deque; a daemon thread formats and
writes the lines every 100 ms through a size-rotated ``logging`` handler (5 MB x 5 files).
Lines read like the user guide::

    [2026-02-25 02:00:00] Instance analyzer-1 requested 1 request (openai)
    [2026-02-25 02:00:01] Approved: 121/500 requests used
"""

from __future__ import annotations

import atexit
import collections
import logging
import logging.handlers
import threading
import time
from pathlib import Path

_DATEFMT = "%Y-%m-%d %H:%M:%S"


class LineLog:
    """One log file, fed from any thread; ``flush()`` writes what is pending now.

    Lines are formatted in batches by the writer thread (one timestamp per second, one
    handler call per batch) so that logging every permit costs the caller a deque append.
    """

    def __init__(self, path: Path | None, name: str) -> None:
        self.path = path
        self._pending: collections.deque[tuple[float, str, tuple[object, ...]]] = (
            collections.deque(maxlen=100_000))
        self._logger = logging.getLogger(f"cross_instance.{name}.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler: logging.Handler | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handler = logging.handlers.RotatingFileHandler(
                    path, maxBytes=5_000_000, backupCount=5, encoding="utf-8", delay=True)
            except OSError:
                self.path = None  # unwritable cwd: run without a log file rather than fail
            else:
                handler.setFormatter(logging.Formatter("%(message)s"))
                self._logger.addHandler(handler)
                self._handler = handler
                self._thread = threading.Thread(target=self._run, name=f"pi-xi-{name}-log",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.close)

    def __call__(self, template: str, *args: object) -> None:
        if self._handler is not None:
            self._pending.append((time.time(), template, args))

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.flush()

    def flush(self) -> None:
        """Format everything pending and hand it to the file handler as one block."""
        with self._lock:
            if not self._pending or self._handler is None:
                return
            lines = []
            stamp_second, stamp = -1, ""
            while self._pending:
                created, template, args = self._pending.popleft()
                second = int(created)
                if second != stamp_second:
                    stamp_second = second
                    stamp = time.strftime(_DATEFMT, time.localtime(second))
                lines.append(f"[{stamp}] {template % args if args else template}")
            record = self._logger.makeRecord(
                self._logger.name, logging.INFO, "", 0, "\n".join(lines), (), None)
            self._handler.handle(record)

    def close(self) -> None:
        self._stop.set()
        self.flush()
        if self._handler is not None:
            self._handler.close()
            self._logger.removeHandler(self._handler)
            self._handler = None


def log_path(cwd: Path, name: str) -> Path:
    return cwd / ".pi" / "logs" / f"{name}.log"
