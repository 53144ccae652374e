"""``GET /v1/events`` over a real socket: events arrive as SSE messages, ``Last-Event-ID`` and
``?after=`` resume after an id, ``?kinds=`` filters, a subscriber that does not read is dropped
with ``event: overflow`` without holding up permits or the other subscribers, and a
subscriber that disconnects (or a daemon that closes its streams) is freed at once."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cross_instance.daemon.events_stream import EventHub, close_streams
from cross_instance.stores import open_store
from cross_instance.stores.base import Store
from tests.daemon.served_app import served_app, wait_until

Message = dict[str, str]


def messages(response: httpx.Response) -> Iterator[Message]:
    """The SSE messages of a streamed response (comment lines skipped)."""
    fields: Message = {}
    for line in response.iter_lines():
        if not line:
            if fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def events(stream: Iterator[Message], count: int) -> list[Message]:
    """The next ``count`` messages that carry an event."""
    got: list[Message] = []
    for m in stream:
        if "event" in m:
            got.append(m)
            if len(got) == count:
                break
    return got


def register(http: httpx.Client, *names: str) -> None:
    for name in names:
        http.post("/v1/instances/register", json={"instanceId": name}).raise_for_status()


def test_events_arrive_as_sse_messages(any_store: Store) -> None:
    with served_app(any_store) as run, httpx.Client(base_url=run.base, timeout=30) as http:
        with http.stream("GET", "/v1/events") as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            register(http, "a", "b", "c")
            got = events(messages(resp), 3)
    assert [m["event"] for m in got] == ["instance_up"] * 3
    bodies = [json.loads(m["data"]) for m in got]
    assert [b["instanceId"] for b in bodies] == ["a", "b", "c"]
    for m, body in zip(got, bodies, strict=True):
        assert set(body) == {"eventId", "kind", "instanceId", "wallMs", "data"}
        assert int(m["id"]) == body["eventId"]
        assert body["kind"] == m["event"]
    ids = [b["eventId"] for b in bodies]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_resume_from_last_event_id_or_after(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path / 'state'}")
    with served_app(store) as run, httpx.Client(base_url=run.base, timeout=30) as http:
        register(http, "a", "b", "c")
        with http.stream("GET", "/v1/events", params={"after": 0}) as resp:
            ids = [int(m["id"]) for m in events(messages(resp), 3)]
        with http.stream("GET", "/v1/events", headers={"Last-Event-ID": str(ids[0])}) as resp:
            stream = messages(resp)
            assert [int(m["id"]) for m in events(stream, 2)] == ids[1:]
            register(http, "d")  # after the backlog, the new ones
            (live,) = events(stream, 1)
            assert json.loads(live["data"])["instanceId"] == "d"
            assert int(live["id"]) > ids[2]
        with http.stream("GET", "/v1/events", params={"after": ids[1]}) as resp:
            assert [int(m["id"]) for m in events(messages(resp), 1)] == ids[2:]
        # the header (what EventSource sends on reconnect) wins over the URL's after
        with http.stream("GET", "/v1/events", params={"after": 0},
                         headers={"Last-Event-ID": str(ids[1])}) as resp:
            assert [int(m["id"]) for m in events(messages(resp), 1)] == ids[2:]
        http.post("/v1/instances/unregister", json={"instanceId": "b"}).raise_for_status()
        with http.stream("GET", "/v1/events",
                         params={"after": 0, "kinds": "instance_down"}) as resp:
            (down,) = events(messages(resp), 1)
        assert down["event"] == "instance_down"
        assert json.loads(down["data"])["instanceId"] == "b"
        bad = http.get("/v1/events", headers={"Last-Event-ID": "soon"})
        assert bad.status_code == 400
        assert bad.json()["code"] == "invalid_request"


def _stalled_subscriber(addr: str) -> socket.socket:
    """A client that asks for the stream, reads its head, and then reads nothing."""
    host, port = addr.rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /v1/events HTTP/1.1\r\nHost: {addr}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def _read_to_end(sock: socket.socket) -> bytes:
    """What is left of a chunked response, up to its last chunk."""
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        assert chunk, "the daemon closed the connection before the stream's end"
        data += chunk
    return data


def test_a_subscriber_that_does_not_read_slows_nothing(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'state'}"
    writer = open_store(url)  # another process writing to the log
    with served_app(open_store(url)) as run, \
            httpx.Client(base_url=run.base, timeout=30) as http:
        hub = run.app.state.event_hub = EventHub(run.daemon, queue_size=40)
        stalled = _stalled_subscriber(run.addr)
        received: list[int] = []
        following = threading.Event()

        def follow() -> None:
            with httpx.Client(base_url=run.base, timeout=30) as mine, \
                    mine.stream("GET", "/v1/events", params={"kinds": "tick,done"}) as r:
                following.set()
                for m in messages(r):
                    if m.get("event") == "done":
                        return
                    if m.get("event") == "tick":
                        received.append(json.loads(m["data"])["data"]["n"])

        reader = threading.Thread(target=follow)
        reader.start()
        try:
            assert following.wait(30)
            wait_until(lambda: hub.subscribers == 2, "both subscribed")
            ticks = 0
            while hub.dropped == 0:  # until the stalled one is too far behind
                # bounded below the log's 10,000 kept events
                assert ticks < 340, "the stalled subscriber was never dropped"
                for _ in range(25):
                    writer.record_event("padding", None, {"pad": "x" * 8000})
                writer.record_event("tick", None, {"n": ticks})
                ticks += 1
            register(http, "p")
            cycles = 0
            for _ in range(50):  # within the burst: nothing here waits for the rate
                got = http.post("/v1/permits/acquire", json={
                    "instanceId": "p", "provider": "openai", "timeoutMs": 30_000})
                got.raise_for_status()
                permit = got.json()["permitId"]
                http.post("/v1/permits/report", json={
                    "instanceId": "p", "permitId": permit, "status": 200}).raise_for_status()
                http.post("/v1/permits/release", json={
                    "instanceId": "p", "permitIds": [permit]}).raise_for_status()
                cycles += 1
            writer.record_event("done", None, {})
            reader.join(60)
            assert not reader.is_alive()
        finally:
            writer.close()
        assert cycles == 50
        assert hub.dropped == 1  # the stalled one only
        assert received == list(range(ticks))  # the reading subscriber missed nothing
        tail = _read_to_end(stalled).decode()
        stalled.close()
        assert "event: overflow" in tail
        overflow = tail[tail.index("event: overflow"):]
        last = json.loads(overflow.split("data: ", 1)[1].split("\n", 1)[0])["lastEventId"]
        sent = [int(line[4:]) for line in tail.splitlines() if line.startswith("id: ")]
        assert sent[-1] == last  # the overflow's id is the last event it was sent
        if len(sent) > 1:
            assert sent[-2] <= last
        # reconnecting with that id picks up right after it
        with http.stream("GET", "/v1/events", headers={"Last-Event-ID": str(last)}) as resp:
            (first,) = events(messages(resp), 1)
        assert int(first["id"]) == run.daemon.store.events(last, 1)[0].event_id


def _gauge(http: httpx.Client, name: str) -> float:
    text = http.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def test_a_disconnected_subscriber_is_freed(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path / 'state'}")
    with served_app(store) as run, httpx.Client(base_url=run.base, timeout=30) as http:
        # no keep-alive for the test's length: only the disconnect itself can free it
        hub = run.app.state.event_hub = EventHub(run.daemon, keepalive_s=3600)
        with http.stream("GET", "/v1/events") as resp:
            assert resp.status_code == 200
            assert hub.subscribers == 1
            assert _gauge(http, "pi_xi_event_subscribers") == 1
        wait_until(lambda: hub.subscribers == 0, "the subscriber freed")
        wait_until(lambda: _gauge(http, "pi_xi_event_subscribers") == 0, "the gauge back to 0")


def test_closing_the_streams_ends_them(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path / 'state'}")
    with served_app(store) as run, httpx.Client(base_url=run.base, timeout=30) as http:
        with http.stream("GET", "/v1/events") as resp:
            assert resp.status_code == 200
            close_streams(run.app)  # what a shutting-down server calls, from its own thread
            lines = list(resp.iter_lines())  # ends: the daemon finished the response
        assert lines[0] == "retry: 1000"
        after = http.get("/v1/events")
        assert after.status_code == 503
        assert after.json()["code"] == "store_unavailable"
