"""Freed slots announced on every host: the Redis side of the hand-over.

The Lua operation that frees slots while anybody waits (``announce`` in slots.lua) publishes
``"n instance"`` on the channel ``<prefix>freed``. A process subscribes while it has slot
waiters (one connection of its own, kept ``LINGER_S`` after its last waiter left, so that a
process that waits again and again does not connect each time) and wakes its ``n`` earliest
waiters (``acquire.Wake``); the releasing instance skips its own messages (it woke its own
waiters already).

Why a published message and not a blocking pop on a list per waiting instance: a release
then costs one PUBLISH inside the step that frees the slot, and leaves nothing behind; a list
per instance must be found and written by every release, and cleaned up after processes that
die without a word. Redis sends the message to every subscribed host at once.

What is promised, as with the doorbells of ``handover``: a message only hurries a waiter. A
lost one (a subscriber reconnecting or just subscribing, an account that may not publish)
costs the waiter its safety poll, never a grant; the store alone decides who is granted. Each
(re)subscription wakes the earliest waiter once, so a release published before it was
listening is found at once too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

LINGER_S = 2.0  # a subscription outlives the process's last slot waiter this long
READ_S = 0.25  # the listener looks whether it is still needed at least this often
RETRY_S = (0.05, 1.0)  # reconnecting after a lost connection: first and longest pause


class FreedChannel:
    """This instance's subscription to freed slots. ``set_waiting`` on every change of
    "this process has slot waiters"; ``check()`` once at start. Thread-safe."""

    def __init__(self, client: Any, channel: str, instance_id: str,
                 on_freed: Callable[[int], object], on_subscribed: Callable[[], object],
                 where: str) -> None:
        self._client = client
        self.channel = channel
        self._own = instance_id.encode("utf-8", "surrogatepass")
        self._on_freed = on_freed
        self._on_subscribed = on_subscribed
        self._where = where
        self._lock = threading.Lock()
        self._waiting = False
        self._idle_since = 0.0
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self.refused: str | None = None  # why this account may not use the channel
        self.subscribed = False
        self.received = 0  # announcements of other instances received (tests, benchmarks)

    def check(self) -> str | None:
        """Whether this account may publish and subscribe on the channel (one PUBLISH and one
        SUBSCRIBE on a connection of its own, at start): if not, why (then waiters on other
        hosts find freed slots by polling), said in the start-up log."""
        import redis

        pubsub = None
        try:
            self._client.publish(self.channel, b"0 ")  # 0 slots: wakes nobody
            pubsub = self._client.pubsub()
            pubsub.subscribe(self.channel)
            pubsub.get_message(timeout=5.0)
        except redis.exceptions.ResponseError as err:  # NOPERM (ACL), or disabled commands
            self.refused = (
                f"Redis at {self._where} refuses PUBLISH or SUBSCRIBE on channel "
                f"{self.channel!r} ({str(err).splitlines()[0]}): waiters on other hosts find "
                "freed slots by polling (4-100 ms); allow the channel (&<prefix>*) and "
                "+publish +subscribe, see docs/redis.md 'Managed Redis'")
        except redis.exceptions.RedisError:
            pass  # unreachable now: the store says so itself; the subscription retries
        finally:
            if pubsub is not None:
                pubsub.close()
        return self.refused

    def set_waiting(self, waiting: Callable[[], bool]) -> None:
        with self._lock:
            self._waiting = waiting()
            if not self._waiting:
                self._idle_since = time.monotonic()
            elif (self._thread is None and self.refused is None
                  and not self._closed.is_set()):
                self._thread = threading.Thread(target=self._run, name="pi-xi-freed",
                                                daemon=True)
                self._thread.start()

    def _needed(self) -> bool:
        """False (and the thread forgotten) once nobody waited for ``LINGER_S``."""
        with self._lock:
            if self._closed.is_set() or (
                    not self._waiting and time.monotonic() - self._idle_since > LINGER_S):
                self._thread = None
                return False
            return True

    def _run(self) -> None:
        import redis

        pause = RETRY_S[0]
        while self._needed():
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                while self._needed():
                    message = pubsub.get_message(timeout=READ_S)
                    if message is not None:
                        self._handle(message)
                        pause = RETRY_S[0]
                return
            except redis.exceptions.ResponseError as err:
                self.refused = f"SUBSCRIBE {self.channel!r} refused: {err}"
                with self._lock:
                    self._thread = None
                return
            except (redis.exceptions.RedisError, OSError):
                pass  # the connection was lost: subscribe again (waiters poll meanwhile)
            finally:
                self.subscribed = False
                try:
                    pubsub.close()
                except (redis.exceptions.RedisError, OSError):
                    pass
            self._closed.wait(pause)
            pause = min(RETRY_S[1], pause * 2)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            self.subscribed = True
            self._on_subscribed()  # a release announced before this moment was missed
        elif kind == "message":
            n, _, who = bytes(message["data"]).partition(b" ")
            if who == self._own:
                return
            try:
                count = int(n)
            except ValueError:
                return  # not an announcement: ignored
            if count > 0:
                self.received += 1
                self._on_freed(count)

    def close(self) -> None:
        """Stop listening: the thread (a daemon) ends and closes its connection within
        ``READ_S``; nothing waits for it, so closing a runtime stays quick."""
        self._closed.set()
