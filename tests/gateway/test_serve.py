"""The gateway in a real ``pi-xi serve`` (issue 17), configured from ``.pi/config.json``: a
provider of the config's own reached by its base URL, and the daemon killed mid-stream loses
the client's permit for no longer than the lease."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import openai

from cross_instance.stores.sqlite.store import SqliteStore
from cross_instance.testing.fakeprovider import FakeProvider
from tests.daemon.served_app import wait_until
from tests.daemon_process import daemon_process
from tests.gateway.conftest import KEY


def test_a_configured_provider_and_a_daemon_killed_mid_stream(tmp_path: Path) -> None:
    with FakeProvider(requests_per_minute=6000, burst=100) as fake:
        (tmp_path / ".pi").mkdir()
        (tmp_path / ".pi" / "config.json").write_text(json.dumps({"crossInstance": {
            "heartbeatIntervalMs": 200, "heartbeatTimeoutMs": 1000,
            "providers": {"local": {"baseUrl": f"{fake.url}/v1", "requestsPerMinute": 600}}}}))
        with daemon_process(tmp_path) as daemon:
            client = openai.OpenAI(base_url=f"http://{daemon.addr}/local/v1", api_key=KEY,
                                   max_retries=0)
            reply = client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": "hi"}],  # type: ignore[list-item]
                max_tokens=4)
            assert reply.choices[0].message.content
            limits = httpx.get(f"http://{daemon.addr}/v1/limits?provider=local").json()
            assert limits["providers"]["local"]["configured"]["requestsPerMinute"] == 600

            started = threading.Event()
            outcome: list[BaseException | None] = []

            def stream() -> None:
                try:
                    with httpx.stream("POST", f"http://{daemon.addr}/local/v1/chat/completions",
                                      json={"model": "llama", "stream": True, "max_tokens": 30,
                                            "messages": [{"role": "user", "content": "hi"}]},
                                      headers={"Authorization": f"Bearer {KEY}",
                                               "x-fake-latency-ms": "30000"},
                                      timeout=60) as r:
                        started.set()
                        for _ in r.iter_raw():
                            pass
                    outcome.append(None)
                except httpx.HTTPError as err:
                    outcome.append(err)

            reader = threading.Thread(target=stream)
            reader.start()
            assert started.wait(20)
            store = SqliteStore(tmp_path / "state")
            try:
                assert len(store.snapshot().permits) == 1
                daemon.kill()
                reader.join(20)
                assert outcome and isinstance(outcome[0], httpx.HTTPError)  # cut, not hung
                killed_at = time.monotonic()
                wait_until(lambda: store.reap() is not None and not store.snapshot().permits,
                           "the dead daemon's client permit freed", 10)
                assert time.monotonic() - killed_at < 5  # the lease (1 s), not more
            finally:
                store.close()
