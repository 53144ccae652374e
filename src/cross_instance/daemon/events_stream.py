"""``GET /v1/events``: the store's shared event log as server-sent events, for clients in any
language (``EventSource`` in a browser or Node, ``curl -N``).

Each event is one SSE message::

    id: 42
    event: rate_limited
    data: {"eventId": 42, "kind": "rate_limited", "instanceId": "a-1", "wallMs": ..., "data": {...}}

A client that reconnects with ``Last-Event-ID`` (``EventSource`` does it on its own), or asks
``?after=<id>``, gets every kept event after that id and then the new ones; without either it
gets the events from the moment it connected. ``?kinds=a,b`` keeps those kinds only.

Promises:

- one poller per daemon reads the log (in the store's threads, never on the event loop, every
  ``POLL_S`` while nothing is new) however many clients follow it, and hands each new event
  to every subscriber's bounded queue; nothing on the permit path waits for a subscriber;
- a subscriber that falls ``QUEUE_SIZE`` events behind (it does not read, or reads too slowly)
  is dropped: the poller stops queueing for it and, once it reads again, it gets a last
  ``event: overflow`` message (``id:`` the last event it was sent) telling it to reconnect with
  that ``Last-Event-ID``; the others never wait for it;
- a comment line every ``KEEPALIVE_S`` keeps idle connections (and proxies) open;
- the stream ends, and the subscriber is freed, as soon as the client disconnects, and when
  ``close_streams(app)`` is called (at shutdown); the poller stops when nobody follows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from cross_instance.coordination.events import newest_id
from cross_instance.core.events import event_json
from cross_instance.core.records import Event
from cross_instance.daemon.metrics import ERROR_RESPONSES, metrics_for
from cross_instance.daemon.state import Daemon
from cross_instance.errors import StoreUnavailable

POLL_S = 0.1
KEEPALIVE_S = 15.0
QUEUE_SIZE = 1000
PAGE = 500
RETRY_MS = 1000  # what EventSource waits before it reconnects
MEDIA_TYPE = "text/event-stream"

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)


class Subscriber:
    """One client's place in the fan-out: the events queued for it, and why it should stop."""

    def __init__(self, kinds: frozenset[str] | None, limit: int) -> None:
        self.kinds = kinds
        self.limit = limit
        self.pending: collections.deque[Event] = collections.deque()
        self.wake = asyncio.Event()
        self.overflowed = False
        self.ended = False  # the client left, or the daemon is shutting down

    def wants(self, event: Event) -> bool:
        return self.kinds is None or event.kind in self.kinds

    def offer(self, event: Event) -> bool:
        """Queue ``event`` if wanted; False (and nothing kept) when the queue is full."""
        if not self.wants(event):
            return True
        if len(self.pending) >= self.limit:
            self.overflowed = True
            self.pending.clear()
            self.wake.set()
            return False
        self.pending.append(event)
        self.wake.set()
        return True

    def end(self) -> None:
        self.ended = True
        self.wake.set()


class EventHub:
    """The daemon's one reader of the event log and its subscribers (see the module)."""

    def __init__(self, daemon: Daemon, *, poll_s: float = POLL_S,
                 queue_size: int = QUEUE_SIZE, keepalive_s: float = KEEPALIVE_S,
                 page: int = PAGE) -> None:
        self.daemon = daemon
        self.poll_s = poll_s
        self.queue_size = queue_size
        self.keepalive_s = keepalive_s
        self.page = min(page, queue_size)  # a page read at once must fit in every queue
        self.closed = False
        self.dropped = 0
        self.metrics = metrics_for(daemon)
        self._subs: set[Subscriber] = set()
        self._cursor = 0  # the newest event id the poller has handed out
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    async def subscribe(self, kinds: frozenset[str] | None) -> tuple[Subscriber, int]:
        """A new subscriber and the id after which the poller will hand it events."""
        if self.closed:
            raise StoreUnavailable("the coordinator is shutting down: reconnect later")
        self._loop = asyncio.get_running_loop()
        async with self._starting:
            if self.closed:  # closed while this one waited for another's start
                raise StoreUnavailable("the coordinator is shutting down: reconnect later")
            if self._task is None or self._task.done():
                self._cursor = await self.daemon.run(newest_id, self.daemon.store)
                self._task = asyncio.create_task(self._poll(), name="pi-xi-event-hub")
            sub = Subscriber(kinds, self.queue_size)
            self._subs.add(sub)
            self.metrics.subscribers.inc()
            return sub, self._cursor

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.end()
        if sub in self._subs:
            self._subs.discard(sub)
            self.metrics.subscribers.dec()

    def close(self) -> None:
        """End every stream now and accept no new one (the daemon is shutting down). Safe
        from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed() and not _running_on(loop):
            loop.call_soon_threadsafe(self._close)
        else:
            self._close()

    def _close(self) -> None:
        self.closed = True
        for sub in list(self._subs):
            self.unsubscribe(sub)
        if self._task is not None:
            self._task.cancel()

    async def backlog(self, after: int, upto: int) -> AsyncGenerator[list[Event], None]:
        """The kept events in ``(after, upto]``, a page at a time (read as the client takes
        them, so a long backlog costs no memory)."""
        while after < upto:
            page = await self.daemon.run(self.daemon.store.events, after, self.page)
            if not page:
                return
            kept = [e for e in page if e.event_id <= upto]
            if kept:
                yield kept
            if len(kept) < len(page):
                return
            after = page[-1].event_id

    async def _poll(self) -> None:
        failing = False
        while self._subs and not self.closed:
            try:
                events = await self.daemon.run(self.daemon.store.events, self._cursor,
                                               self.page)
            except Exception as err:  # noqa: BLE001 - the store away: say so once, go on
                if not failing:
                    self.daemon.log("Event stream cannot read the event log: %s", err)
                failing = True
                await asyncio.sleep(max(self.poll_s, 1.0))
                continue
            failing = False
            for event in events:
                if event.event_id <= self._cursor:
                    continue
                self._cursor = event.event_id
                for sub in list(self._subs):
                    if not sub.offer(event):
                        self._drop(sub)
            if len(events) < self.page:
                await asyncio.sleep(self.poll_s)

    def _drop(self, sub: Subscriber) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            self.dropped += 1
            self.metrics.subscribers.dec()
            self.metrics.subscribers_dropped.inc()


def _running_on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def event_message(event: Event) -> bytes:
    """One SSE message (``data`` is one line: JSON escapes every newline)."""
    body = json.dumps(event_json(event), separators=(",", ":"), default=str)
    kind = event.kind.replace("\r", " ").replace("\n", " ")
    return f"id: {event.event_id}\nevent: {kind}\ndata: {body}\n\n".encode()


def overflow_message(last_id: int, limit: int) -> bytes:
    body = json.dumps({"lastEventId": last_id, "message": (
        f"this subscriber fell more than {limit} events behind and was dropped: reconnect "
        f"with Last-Event-ID: {last_id}")})
    return f"id: {last_id}\nevent: overflow\ndata: {body}\n\n".encode()


async def stream(hub: EventHub, sub: Subscriber, after: int | None, start: int
                 ) -> AsyncGenerator[bytes, None]:
    """What the client is sent: the backlog it asked for, then what the poller queues."""
    sent = start if after is None else after  # the client has every wanted event to here
    yield f"retry: {RETRY_MS}\n: pi-xi events after {sent}\n\n".encode()
    if after is not None:
        async with contextlib.aclosing(hub.backlog(after, start)) as pages:
            async for page in pages:
                if sub.ended or sub.overflowed:
                    break
                chunk = b"".join(event_message(e) for e in page if sub.wants(e))
                if chunk:
                    yield chunk
                sent = max(sent, page[-1].event_id)
            else:
                sent = max(sent, start)
    while True:
        if sub.overflowed:
            yield overflow_message(sent, hub.queue_size)
            return
        if sub.ended or hub.closed:
            return
        if sub.pending:
            batch: list[bytes] = []
            while sub.pending and len(batch) < 200:
                event = sub.pending.popleft()
                if event.event_id > sent:
                    batch.append(event_message(event))
                    sent = event.event_id
            if batch:
                yield b"".join(batch)
            continue
        sub.wake.clear()
        try:
            await asyncio.wait_for(sub.wake.wait(), hub.keepalive_s)
        except TimeoutError:
            yield b": keep-alive\n\n"


class EventStreamResponse(StreamingResponse):
    """A streaming response that frees its subscriber however the stream ends (the client
    gone, the stream finished, or the task cancelled at shutdown)."""

    media_type = MEDIA_TYPE

    def __init__(self, content: AsyncGenerator[bytes, None], on_close: Callable[[], None]
                 ) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        self._chunks = content
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
            await self._chunks.aclose()


def hub_of(app: Any) -> EventHub:
    """The app's event hub (made on first use)."""
    hub: EventHub | None = getattr(app.state, "event_hub", None)
    if hub is None:
        hub = app.state.event_hub = EventHub(app.state.daemon)
    return hub


def close_streams(app: Any) -> None:
    """End every event stream of ``app``, from any thread (call when the server begins to shut
    down: open streams otherwise hold the shutdown until the server's grace period cancels
    them)."""
    hub: EventHub | None = getattr(app.state, "event_hub", None)
    if hub is not None:
        hub.close()


def _after(last_event_id: str | None, after: int | None) -> int | None:
    """Where to start: the header (digits only, checked by the route) wins, empty is none."""
    return int(last_event_id) if last_event_id else after


def _kinds(kinds: str | None) -> frozenset[str] | None:
    if kinds is None:
        return None
    return frozenset(k.strip() for k in kinds.split(",") if k.strip()) or None


@router.get("/events", tags=["events"], response_class=EventStreamResponse, status_code=200,
            responses={200: {"description": "Server-sent events: one message per event "
                             "(id, event: kind, data: JSON), comment lines as keep-alives, and "
                             "a last `event: overflow` when the client fell too far behind",
                             "content": {MEDIA_TYPE: {"schema": {"type": "string"}}}}})
async def events(
    request: Request,
    after: Annotated[int | None, Query(ge=0, lt=2**63, description=(
        "Start after this event id (0: from the oldest kept); default: from now"))] = None,
    kinds: Annotated[str | None, Query(max_length=4096, description=(
        "Comma-separated event kinds to receive (default: every kind)"))] = None,
    last_event_id: Annotated[str | None, Header(
        alias="Last-Event-ID", pattern=r"^[0-9]{0,18}$", description=(
            "Resume after this event id (EventSource sends it when it reconnects; it wins "
            "over after)"))] = None,
) -> EventStreamResponse:
    """Follow the store's shared event log (instances connected and disconnected, usage
    warnings, 429s, cooldowns, learned limits, workflow claims, lost locks) as server-sent
    events, with resume from ``Last-Event-ID``."""
    start_after = _after(last_event_id, after)
    wanted = _kinds(kinds)
    hub = hub_of(request.app)
    sub, start = await hub.subscribe(wanted)
    return EventStreamResponse(stream(hub, sub, start_after, start),
                               on_close=lambda: hub.unsubscribe(sub))
