"""``GET /metrics`` scraped over a real socket after permits and a 429 went through the public
API: the daemon's counters, the store's reading, the cache that bounds store reads, the
per-daemon registries, and the token."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cross_instance.core import events as ev
from cross_instance.daemon.metrics import metrics_for
from cross_instance.stores import open_store
from cross_instance.stores.base import Store
from tests.conftest import serve_store
from tests.daemon.served_app import served_app

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
OPENAI = {"provider": "openai", "model": "gpt-4o"}


def scrape(http: httpx.Client) -> Samples:
    resp = http.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): float(s.value)
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def permits(http: httpx.Client, instance: str, count: int) -> list[int]:
    got = []
    for _ in range(count):
        resp = http.post("/v1/permits/acquire", json={
            "instanceId": instance, **OPENAI, "timeoutMs": 30_000})
        resp.raise_for_status()
        got.append(resp.json()["permitId"])
        if len(got) == 1:  # an answer heard: the burst applies, no slow start
            http.post("/v1/permits/report", json={
                "instanceId": instance, "permitId": got[0], "status": 200}).raise_for_status()
    return got


def test_permits_and_a_429_show_in_the_metrics(any_store: Store) -> None:
    with serve_store(any_store) as addr, \
            httpx.Client(base_url=f"http://{addr}", timeout=30) as http:
        http.post("/v1/instances/register", json={"instanceId": "m1"}).raise_for_status()
        held = permits(http, "m1", 4)
        http.post("/v1/permits/release", json={"instanceId": "m1", "permitIds": held[:3]}
                  ).raise_for_status()
        reported = http.post("/v1/permits/report", json={
            "instanceId": "m1", "permitId": held[3], "status": 429,
            "headers": {"retry-after": "30"}})
        assert reported.json() == {"applied": True}
        samples = scrape(http)

    assert value(samples, "pi_xi_permits_granted_total", **OPENAI) == 4
    assert value(samples, "pi_xi_permit_wait_seconds_count", **OPENAI) == 4
    assert value(samples, "pi_xi_permit_wait_seconds_bucket", **OPENAI, le="+Inf") == 4
    assert value(samples, "pi_xi_permit_requests_waiting", **OPENAI) == 0
    assert value(samples, "pi_xi_rate_limited_reported_total", **OPENAI) == 1
    assert value(samples, "pi_xi_permits_held", **OPENAI) == 1
    assert value(samples, "pi_xi_instances_active") == 1
    assert value(samples, "pi_xi_store_up") == 1
    assert value(samples, "pi_xi_store_waiting") == 0
    requests = {"provider": "openai", "model": "", "unit": "requests"}
    configured = value(samples, "pi_xi_limit_configured_per_minute", **requests)
    learned = value(samples, "pi_xi_limit_learned_per_minute", **requests)
    assert configured is not None and learned is not None
    assert learned < configured  # the 429 taught a lower rate
    assert value(samples, "pi_xi_cooldown_active", **requests) == 1
    left = value(samples, "pi_xi_cooldown_remaining_seconds", **requests)
    assert left is not None and 0 < left <= 30
    assert value(samples, "pi_xi_usage_last_minute", **requests) == 4


def test_the_store_is_read_at_most_once_a_second(tmp_path: Path) -> None:
    with served_app(open_store(f"sqlite://{tmp_path / 'state'}")) as run, \
            httpx.Client(base_url=run.base, timeout=30) as http:
        started = time.monotonic()
        for _ in range(30):
            scrape(http)
        elapsed = time.monotonic() - started
        reads = metrics_for(run.daemon).snapshot_reads
    assert 1 <= reads <= 2 + elapsed / metrics_for(run.daemon).snapshot_every_s


def test_429s_in_the_shared_event_log_are_counted(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'state'}"
    with served_app(open_store(url)) as run, \
            httpx.Client(base_url=run.base, timeout=30) as http:
        other = open_store(url)  # another instance of the store announces a 429
        try:
            other.record_event(ev.RATE_LIMITED, "elsewhere",
                               ev.rate_limited("r:openai/gpt-4o", 5.0))
        finally:
            other.close()
        samples = scrape(http)
    assert value(samples, "pi_xi_rate_limited_events_total", **OPENAI) == 1
    assert value(samples, "pi_xi_rate_limited_reported_total", **OPENAI) is None


def test_each_daemon_has_its_own_registry(tmp_path: Path) -> None:
    with serve_store(open_store(f"sqlite://{tmp_path / 'a'}")) as a, \
            serve_store(open_store(f"sqlite://{tmp_path / 'b'}")) as b, \
            httpx.Client(base_url=f"http://{a}", timeout=30) as http_a, \
            httpx.Client(base_url=f"http://{b}", timeout=30) as http_b:
        http_a.post("/v1/instances/register", json={"instanceId": "a1"}).raise_for_status()
        permits(http_a, "a1", 2)
        assert value(scrape(http_a), "pi_xi_permits_granted_total", **OPENAI) == 2
        assert value(scrape(http_b), "pi_xi_permits_granted_total", **OPENAI) is None


def test_metrics_need_the_token(tmp_path: Path) -> None:
    token = "metrics-test-token-0123456789"
    with serve_store(open_store(f"sqlite://{tmp_path / 'state'}"), token=token) as addr, \
            httpx.Client(base_url=f"http://{addr}", timeout=30) as http:
        refused = http.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["code"] == "unauthorized"
        wrong = http.get("/metrics", headers={"Authorization": "Bearer not-the-token-at-all"})
        assert wrong.status_code == 401
        assert http.get("/v1/health").status_code == 200
        http.headers["Authorization"] = f"Bearer {token}"
        assert value(scrape(http), "pi_xi_store_up") == 1


def test_permits_of_python_runtimes_through_the_daemon_are_counted(tmp_path: Path) -> None:
    from cross_instance import Runtime
    from tests.helpers_runtime import make_config

    with serve_store(open_store(f"sqlite://{tmp_path / 'state'}")) as addr, \
            httpx.Client(base_url=f"http://{addr}") as http:
        cfg = make_config(tmp_path / "py", store=f"http://{addr}")
        with Runtime.start(cwd=tmp_path, config=cfg, instance_id="py-1") as rt:
            for _ in range(3):
                with rt.permit("p", model="m-1"):
                    pass
        assert value(scrape(http), "pi_xi_remote_permits_granted_total",
                     provider="p", model="m-1") == 3
