"""Every store states what the runtime asks of it: no capability is probed with ``getattr``.

Before, the runtime looked for ``freed_channel``, ``warnings``, ``queued`` and ``prefix`` with
``getattr(store, ..., default)``, so a store that misspelled one (or the daemon's client store
to come) silently lost the hand-over announcements or its warnings. Now they are part of the
``Store`` protocol; this runs on every store kind."""

from __future__ import annotations

from cross_instance.stores.base import Store


def test_the_store_has_every_member_of_the_protocol(store):
    assert isinstance(store, Store)
    assert isinstance(store.url, str) and store.url
    assert isinstance(store.prefix, str)
    assert isinstance(store.warnings, list) and all(isinstance(w, str) for w in store.warnings)
    assert store.queued is None or isinstance(store.queued, int)
    assert store.capabilities
    freed = store.freed_channel("someone", lambda n: None, lambda: None)
    if freed is not None:
        try:
            assert freed.check() is None and freed.refused is None  # the test account may
        finally:
            freed.close()
