"""A 429 storm from several processes at once (FAULTS.md F22): the shared rate is lowered
once for the whole burst, and every process honours the cooldown."""

from __future__ import annotations

from cross_instance.stores.sqlite.store import SqliteStore
from cross_instance.testing.fakeprovider import FakeProvider
from tests.processes import workers
from tests.processes.spawn import run_together


def test_storm_lowers_once_and_cools_everyone_down(tmp_path):
    state = tmp_path / "state"
    with FakeProvider(requests_per_minute=60, burst=4, header_style="none") as fake:
        results = run_together(workers.storm, [
            (str(state), f"s{i}", fake.base_url_openai + "/chat/completions", 3)
            for i in range(4)])
    statuses = [s for _, codes, _ in results for s in codes]
    assert statuses.count(200) == 4 and statuses.count(429) == 8  # the provider's burst
    assert all(blocked for _, _, blocked in results)  # nobody sends into the cooldown
    store = SqliteStore(state, create=False)
    try:
        bucket = {b.key: b for b in store.snapshot().buckets}["r:p"]
    finally:
        store.close()
    assert bucket.learned_rate == 6000 * 0.9  # eight 429s, one congestion epoch: one decrease
    assert bucket.cooldown_until_ns > 0
    log = (tmp_path / ".pi" / "logs" / "adaptive-rate-controller.log").read_text()
    assert log.count("Reduced requests per minute from 6000 to 5400") == 1
