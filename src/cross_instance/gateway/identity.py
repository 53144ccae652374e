"""Who a gateway request comes from, and keeping that instance registered while it calls.

A request names its instance with the header ``X-Pi-Instance-Id`` (any valid instance id:
the one a pi process or a library runtime already uses, so its gateway calls and its
library calls are one instance). Without it, the instance is one per API key: ``gw-`` and
12 hex digits of a keyed hash of the key (the key itself is never kept, logged or shown, and
the digits cannot be turned back into it), else one per client address (``gw-<address>``).
So ``pi-xi status`` shows each agent on its own line, and ``instances.{id}`` priorities and
reserved capacity in the config apply to gateway clients as to library callers.

Liveness is the lease: the daemon registers an instance on its first request, renews the
lease at most once per heartbeat interval while it keeps calling, and every heartbeat
interval for the instances with a call in flight (a ten-minute stream keeps its permit). An
instance that stops calling is reaped after ``heartbeatTimeoutMs``, as any other.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import OrderedDict

from cross_instance.core.ids import is_valid_instance_id
from cross_instance.daemon.hosted import hosted_of, http_instance
from cross_instance.daemon.state import Daemon
from cross_instance.errors import DuplicateInstanceError

_KEY_HEADERS = (b"authorization", b"x-api-key", b"x-goog-api-key", b"api-key")
_NOT_ID = re.compile(r"[^A-Za-z0-9._:@-]")
MAX_KNOWN = 10_000


class BadInstanceId(Exception):
    pass


def instance_of(headers: list[tuple[bytes, bytes]], client_host: str) -> str:
    """The instance id a request is made for (``BadInstanceId`` for an invalid header)."""
    named = key = None
    for name, value in headers:
        if name == b"x-pi-instance-id":
            named = value
        elif name in _KEY_HEADERS and key is None:
            key = value
    if named is not None:
        text = named.decode("latin-1")
        if not is_valid_instance_id(text):
            raise BadInstanceId(
                f"X-Pi-Instance-Id {text[:40]!r} is not a valid instance id: use 1-128 "
                "characters from A-Z a-z 0-9 . _ : @ -, starting with a letter or digit")
        return text
    if key:
        digest = hashlib.blake2b(key.strip(), digest_size=6, person=b"pi-xi-gateway")
        return f"gw-{digest.hexdigest()}"
    return f"gw-{_NOT_ID.sub('-', client_host)[:120]}"


class Clients:
    """The gateway's instances: registered on first use, leases renewed while they call."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.interval_s = daemon.config.heartbeat_interval_ms / 1000
        self._renewed: OrderedDict[str, float] = OrderedDict()  # id -> monotonic of renewal
        self._calling: dict[str, int] = {}  # id -> calls in flight
        self._keeper: asyncio.Task[None] | None = None

    async def ensure(self, instance_id: str, client_host: str) -> None:
        """Make sure ``instance_id`` is registered and its lease fresh (a store call at most
        once per heartbeat interval per instance)."""
        now = time.monotonic()
        last = self._renewed.get(instance_id)
        if last is not None and now - last < self.interval_s:
            return
        # an instance registered elsewhere (a pi process naming itself) is used as it is
        if not await self.daemon.call(self.daemon.store.heartbeat, instance_id):
            try:
                await self.register(instance_id, client_host)
            except DuplicateInstanceError:
                pass  # registered by someone else meanwhile: alive
        self._renewed[instance_id] = now
        self._renewed.move_to_end(instance_id)
        while len(self._renewed) > MAX_KNOWN:
            self._renewed.popitem(last=False)
        if self._keeper is None:
            self._keeper = asyncio.ensure_future(self._keep_leases())

    async def register(self, instance_id: str, client_host: str) -> None:
        cfg = self.daemon.config
        record = http_instance(cfg, instance_id, client_host, cfg.heartbeat_timeout_ms,
                               session_id="gateway")
        await self.daemon.call(self.daemon.store.register_instance, record)
        hosted_of(self.daemon).forget(instance_id)
        self._renewed.pop(instance_id, None)
        self.daemon.log("Gateway client %s registered (from %s)", instance_id, client_host)

    def calling(self, instance_id: str, delta: int) -> None:
        count = self._calling.get(instance_id, 0) + delta
        if count > 0:
            self._calling[instance_id] = count
        else:
            self._calling.pop(instance_id, None)

    async def _keep_leases(self) -> None:
        """Every heartbeat interval, renew the leases of instances with a call in flight."""
        while True:
            await asyncio.sleep(self.interval_s)
            now = time.monotonic()
            for instance_id in list(self._calling):
                last = self._renewed.get(instance_id, 0.0)
                if now - last < self.interval_s:
                    continue
                try:
                    await self.daemon.call(self.daemon.store.heartbeat, instance_id)
                except Exception as err:  # noqa: BLE001 - the next round tries again
                    self.daemon.log("Gateway: renewing the lease of %s failed: %r",
                                    instance_id, err)
                    continue
                self._renewed[instance_id] = now
