"""Processes that open a brand-new state directory at the same moment all succeed."""

from __future__ import annotations

from tests.processes.spawn import run_together
from tests.processes.workers import open_store_together


def test_simultaneous_first_opens(tmp_path):
    for round_ in range(3):
        state = tmp_path / f"state{round_}"
        results = run_together(open_store_together, [(str(state),)] * 8, timeout=60)
        assert results == ["ok"] * 8
