"""Who a gateway request is for (issue 17): ``X-Pi-Instance-Id`` names it, else one instance
per API key, and ``pi-xi status`` shows it; priorities and reserved capacity apply to it as
to a library caller. The API key reaches the provider and nothing else: no log line, no file
of the state, no event, no status or metrics."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import httpx

from cross_instance.config import InstancePolicy
from cross_instance.runtime.logs import LineLog
from cross_instance.stores.sqlite.store import SqliteStore
from cross_instance.testing.fakeprovider import FakeProvider
from tests.daemon.served_app import served_app
from tests.gateway.conftest import KEY, gateway_config

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_instances_by_header_or_key_and_the_key_is_kept_nowhere(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "coordinator.log"
    log = LineLog(log_file, "coordinator")
    # no rate-limit headers: the gateway cannot see the limit coming, so 429s pass (events)
    with FakeProvider(requests_per_minute=60, burst=2, header_style="none") as fake:
        state = tmp_path / "state"
        with served_app(SqliteStore(state), gateway_config(fake, rpm=6000, burst=100),
                        log=log, debug=True) as run:
            url = f"{run.base}/openai/v1/chat/completions"
            auth = {"Authorization": f"Bearer {KEY}"}
            statuses = [httpx.post(url, json=CHAT, headers=auth).status_code
                        for _ in range(4)]
            assert statuses.count(429) >= 1  # the provider's own, passed through
            named = httpx.post(url, json=CHAT, headers={**auth, "X-Pi-Instance-Id": "agent-7"})
            assert named.status_code in (200, 429)
            other_key = httpx.post(url, json=CHAT, headers={"x-api-key": "sk-other-key-42"})
            assert other_key.status_code in (200, 429)
            instances = {i.instance_id for i in run.daemon.store.snapshot().instances}
            assert "agent-7" in instances
            by_key = sorted(i for i in instances if i.startswith("gw-"))
            assert len(by_key) == 2, instances  # one per key
            status = httpx.get(f"{run.base}/v1/status").text
            metrics = httpx.get(f"{run.base}/metrics").text
            events = json.dumps([e.data for e in run.daemon.store.events(0, 1000)])
            assert "rate_limited" in {e.kind for e in run.daemon.store.events(0, 1000)}
        log.flush()
        log.close()
        assert fake.stats()["apiKeys"] == [KEY, "sk-other-key-42"]
        files = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
        for secret in (KEY, "sk-other-key-42"):
            assert secret.encode() not in files  # the state, the log
            assert secret not in status + metrics + events
        assert b"/openai/v1/chat/completions" in log_file.read_bytes()  # the log was written


def test_reserved_capacity_applies_to_gateway_clients(tmp_path: Path) -> None:
    """Two slots, one reserved for ``urgent``: while ``holder`` has the other, ``relaxed``
    waits and ``urgent``, arriving later, is served at once. The instance named by the
    header has the config's policy, as a library caller of that id would."""
    import threading
    import time

    with FakeProvider(requests_per_minute=60_000, burst=1000) as fake:
        cfg = replace(gateway_config(fake), total_max_llm=2, instances=MappingProxyType(
            {"urgent": InstancePolicy(priority=9, reserved_capacity=1)}))
        with served_app(SqliteStore(tmp_path / "state"), cfg) as run:
            url = f"{run.base}/openai/v1/chat/completions"
            done: dict[str, float] = {}

            def call(who: str, latency_ms: int) -> None:
                reply = httpx.post(url, json=CHAT, timeout=30, headers={
                    "X-Pi-Instance-Id": who, "x-fake-latency-ms": str(latency_ms)})
                assert reply.status_code == 200
                done[who] = time.monotonic()

            call("urgent", 0)  # joins: a reservation is held for a live instance
            done.clear()
            held_from = time.monotonic()
            holder = threading.Thread(target=call, args=("holder", 1500))
            holder.start()
            _wait_for_permits(run, 1)
            low = threading.Thread(target=call, args=("relaxed", 0))
            low.start()
            _wait_for_waiters(run, 1)
            call("urgent", 0)
            assert set(done) == {"urgent"}  # served while holder still holds its slot
            for t in (holder, low):
                t.join(30)
            # relaxed had to wait for holder's slot (held 1.5 s), not for urgent's reservation
            assert done["relaxed"] - held_from >= 1.4


def _wait_for_permits(run: object, count: int) -> None:
    from tests.daemon.served_app import wait_until

    wait_until(lambda: len(run.daemon.store.snapshot().permits) == count,  # type: ignore[attr-defined]
               f"{count} permit(s) held", 10)


def _wait_for_waiters(run: object, count: int) -> None:
    from tests.daemon.served_app import wait_until

    wait_until(lambda: run.daemon.store.snapshot().waiting >= count,  # type: ignore[attr-defined]
               f"{count} waiter(s)", 10)
