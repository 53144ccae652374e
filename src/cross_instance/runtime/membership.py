"""This process as a registered instance: register, heartbeat, leave.

Promises:
- a background daemon thread renews the lease every ``heartbeatIntervalMs`` and reaps dead
  instances; if its record is gone it registers again and reports it, re-declaring the
  permits it still holds: a store that came back empty (Redis restarted without persistence)
  keeps them in their slots during its restart grace; if instead this instance was judged
  dead (a stall past the lease), everything it held was freed then and stays freed;
- it leaves the registry on normal exit (``atexit``) and on SIGTERM/SIGINT. A signal handler is
  installed only where the host program left the default one, and after cleanup the default
  action runs, so the program's exit code is what it would have been without us. A program
  that installs its own handler keeps it; ``atexit`` still runs when it exits normally.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from cross_instance.core.records import InstanceRecord, PermitState, Workload
from cross_instance.errors import CrossInstanceError
from cross_instance.stores.base import Store


class Membership:
    def __init__(self, store: Store, record: InstanceRecord, interval_s: float,
                 log: Callable[..., None], on_rejoin: Callable[[], None],
                 usage: Callable[[], dict[str, int]] | None = None,
                 on_live: Callable[[int], None] | None = None,
                 holding: Callable[[], Sequence[PermitState]] | None = None) -> None:
        self.store = store
        self.record = record
        self.interval_s = interval_s
        self.log = log
        self.on_rejoin = on_rejoin
        self.usage = usage
        self.on_live = on_live  # told how many instances are registered, after each beat
        self.holding = holding  # the permits this process holds now (re-declared on rejoin)
        self.workload: Workload | None = None
        # what the heartbeat publishes instead, when set (``rt.queue``: its queue state)
        self.workload_source: Callable[[], Workload] | None = None
        self.registered = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.lease_s = record.lease_ns / 1e9
        self.valid_until = 0.0  # monotonic: until then the store surely still holds our lease
        self.generation = 0  # +1 each time this instance was judged dead and registered again

    @property
    def instance_id(self) -> str:
        return self.record.instance_id

    def join(self) -> None:
        sent = time.monotonic()
        self.store.register_instance(self.record)
        self.valid_until = sent + self.lease_s
        self.registered = True
        self.log("Instance %s registered (pid %d)", self.instance_id, self.record.pid)
        self._thread = threading.Thread(target=self._beat, name="pi-xi-heartbeat", daemon=True)
        self._thread.start()
        atexit.register(self.leave)
        _install_signal_cleanup(self.leave)

    def rejoin(self) -> None:
        """Register again after the record was found gone: judged dead, or the store came
        back empty."""
        with self._lock:
            if self._stop.is_set():
                return
            sent = time.monotonic()
            if self.store.heartbeat(self.instance_id):  # another thread registered again
                self.valid_until = max(self.valid_until, sent + self.lease_s)
                return
            # limits first: a wait in progress may ask again as soon as the record is back
            self.on_rejoin()
            held = self.holding() if self.holding is not None else ()
            kept = self.store.rejoin_instance(self.record, held)
            self.valid_until = sent + self.lease_s
            self.generation += 1
            if kept:
                self.log("Instance %s found the store restarted empty; registered again and "
                         "re-declared the %d permits it holds", self.instance_id, kept)
            else:
                self.log("Instance %s was judged dead (stalled past its lease) or the store "
                         "lost its state; registered again, %d permits it held were freed",
                         self.instance_id, len(held))

    def beat(self) -> None:
        """One heartbeat plus cleanup of dead instances (seed: enhancedHeartbeat)."""
        usage = self.usage() if self.usage is not None else None
        workload = self.workload
        if self.workload_source is not None:
            try:
                workload = self.workload_source()
            except CrossInstanceError as err:
                self.log("Queue state of %s not read: %s", self.instance_id, err)
        sent = time.monotonic()
        if self.store.heartbeat(self.instance_id, workload, usage):
            self.valid_until = max(self.valid_until, sent + self.lease_s)
        else:
            self.rejoin()
        for dead in self.store.reap():
            self.log("Instance %s is dead: its permits and waits were freed", dead)
        if self.on_live is not None:
            self.on_live(len(self.store.list_instances()))

    def confirm(self) -> bool:
        """Self-fencing before acting for something this instance holds: when the last
        confirmed lease may have run out (a stall, a paused process), heartbeat first. False
        when this instance had been judged dead meanwhile: it registered again, and what it
        held may belong to others now (their fenced state will say)."""
        if time.monotonic() < self.valid_until:
            return True
        sent = time.monotonic()
        if self.store.heartbeat(self.instance_id):
            self.valid_until = max(self.valid_until, sent + self.lease_s)
            return True
        self.rejoin()
        return False

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except CrossInstanceError as err:
                self.log("Heartbeat of %s failed: %s", self.instance_id, err)

    def leave(self) -> None:
        """Stop heartbeating and unregister. Idempotent."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval_s + 1)
        if self.leave in _cleanups:
            _cleanups.remove(self.leave)
        try:
            atexit.unregister(self.leave)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
        if self.registered:
            try:
                self.store.unregister_instance(self.instance_id)
                self.log("Instance %s unregistered", self.instance_id)
            except CrossInstanceError as err:
                self.log("Unregistering %s failed: %s", self.instance_id, err)
            self.registered = False


_cleanups: list[Callable[[], None]] = []


def _install_signal_cleanup(cleanup: Callable[[], None]) -> None:
    _cleanups.append(cleanup)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    for cleanup in list(_cleanups):
        try:
            cleanup()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
    _cleanups.clear()
    # Restore the default action and re-deliver: the process ends exactly as it would have.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
