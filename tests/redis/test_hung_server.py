"""A Redis that accepts connections and never answers (stopped, a hung proxy): a store call
gives up with ``StoreUnavailable`` after about the retry budget plus one socket timeout, not
after every try has waited a whole socket timeout."""

from __future__ import annotations

import os
import signal
import time

import pytest

from cross_instance.errors import StoreUnavailable
from cross_instance.stores.redis.store import RedisStore


@pytest.mark.timeout(60)
def test_a_hung_server_is_given_up_on_within_the_budget(server):
    store = RedisStore(server.url(), retry_for_s=1.0, socket_timeout_s=1.0)
    try:
        store.now_ns()  # connected
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.now_ns()
            took = time.monotonic() - began
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert took < 4.0, took  # budget 1 s + one socket timeout of 1 s, with room
        # the untimed retries alone would take ~20 tries x 1 s
    finally:
        store.close()
