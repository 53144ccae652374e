"""Fixtures of the facade's tests."""

from __future__ import annotations

import pytest

from cross_instance.runtime import acquire


@pytest.fixture
def no_sleep(monkeypatch):
    """Any sleep of a permit or lock wait fails the test (nothing here may wait)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a wait slept: {args}")

    monkeypatch.setattr(acquire, "_sleep", refuse)
    monkeypatch.setattr(acquire.Wake, "sleep", refuse)
