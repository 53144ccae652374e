"""Spend totals (``add_spend`` / ``read_spend``), on every store: exact sums, one atomic step
per call, expiry on the store's clock, no lost add under concurrency, any key text, and the
``MAX_COUNT`` bound."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from cross_instance.core.budgets import period_keys
from cross_instance.core.records import MAX_COUNT
from cross_instance.errors import InvalidArgument, StoreCorrupt
from cross_instance.stores.sqlite.db import DB_NAME
from cross_instance.stores.sqlite.store import SqliteStore
from tests.conftest import record

NOW = 1_800_000_000  # a fixed wall time for the keys' periods
HOUR_NS = 3600 * 10**9


def keys(provider: str = "openai") -> list[str]:
    return [k.key for k in period_keys(provider, NOW)]


def later(store, seconds: float = 3600) -> int:
    """An expiry ``seconds`` from now on the store's clock."""
    return store.now_ns() + int(seconds * 1e9)


def test_adds_sum_exactly_and_return_the_totals_in_order(store):
    a, b = keys()[:2]
    exp = later(store)
    assert store.add_spend([(a, 5, exp), (b, 7, exp)]) == [5, 7]
    assert store.add_spend([(a, 10**15, exp), (a, 1, exp), (b, 0, exp)]) == [
        10**15 + 5, 10**15 + 6, 7]  # a key given twice counts both, in order
    assert store.read_spend([b, a, b]) == [7, 10**15 + 6, 7]
    assert store.add_spend([]) == [] and store.read_spend([]) == []


def test_absent_keys_read_zero(store):
    assert store.read_spend(keys("nobody")) == [0, 0, 0, 0]
    store.add_spend([(keys()[0], 3, later(store))])
    assert store.read_spend([keys()[0], keys()[1]]) == [3, 0]


def test_a_key_is_kept_until_its_latest_expiry_then_counts_from_zero(store, clock):
    a, b = keys()[:2]
    store.add_spend([(a, 4, later(store, 10)), (b, 1, later(store, 10))])
    store.add_spend([(a, 2, later(store, 5))])  # an earlier expiry never shortens it
    clock.advance(9)
    assert store.read_spend([a, b]) == [6, 1]
    store.add_spend([(b, 1, later(store, 30))])  # a later one lengthens it
    clock.advance(2)
    assert store.read_spend([a, b]) == [0, 2]
    assert store.add_spend([(a, 3, later(store, 10))]) == [3]  # forgotten: from 0
    clock.advance(30)
    assert store.read_spend([a, b]) == [0, 0]


def test_concurrent_adders_never_lose_an_add(make_store):
    key = keys()[2]
    stores = [make_store() for _ in range(4)]
    exp = later(stores[0])
    seen: list[list[int]] = [[] for _ in stores]
    errors: list[BaseException] = []

    def adder(i: int) -> None:
        try:
            for _ in range(25):
                seen[i] += stores[i].add_spend([(key, 1, exp), (keys()[3], 2, exp)])[:1]
        except BaseException as err:  # noqa: BLE001  # reported below
            errors.append(err)

    threads = [threading.Thread(target=adder, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # every add saw a total of its own: none was lost or applied twice
    assert sorted(t for s in seen for t in s) == list(range(1, 101))
    assert stores[0].read_spend([key, keys()[3]]) == [100, 200]


ODD = ["a:b", "", "*", "p:x", "\t\n\r", "\x00", "ü日本\u2028", "back\\slash", "\\u", "\ud800x",
       "spend:2027-01:*", " openai ", "x" * 300]


def test_odd_key_text_round_trips_without_two_keys_meeting(store):
    mine = [k for p in ODD for k in period_keys(p, NOW) if k.provider is not None]
    mine += period_keys("openai", NOW)[:2]  # the account's
    names, refunds = [k.key for k in mine], [k.refund_key for k in mine]
    assert len(set(names + refunds)) == len(mine) * 2
    exp = later(store)
    everything = names + refunds
    totals = store.add_spend([(k, i + 1, exp) for i, k in enumerate(everything)])
    assert totals == list(range(1, len(everything) + 1))
    assert store.read_spend(everything) == totals
    assert store.read_spend(keys("openai")[2:]) == [0, 0]


def test_amounts_and_totals_beyond_max_count_are_refused_whole(store):
    a, b = keys()[:2]
    exp = later(store)
    assert store.add_spend([(a, MAX_COUNT - 1, exp)]) == [MAX_COUNT - 1]
    for bad in ([(b, MAX_COUNT + 1, exp)], [(b, -1, exp)], [(b, True, exp)],
                [(b, 1.5, exp)], [(b, 1, -1)], [(b, 1, 2**63)], [(b, 1)], [(7, 1, exp)]):
        with pytest.raises(InvalidArgument):
            store.add_spend(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="beyond"):
        store.add_spend([(b, 5, exp), (a, 2, exp)])  # the second overflows: nothing is added
    assert store.read_spend([a, b]) == [MAX_COUNT - 1, 0]
    assert store.add_spend([(a, 1, exp)]) == [MAX_COUNT]  # exactly the bound is kept
    with pytest.raises(InvalidArgument):
        store.read_spend([3])  # type: ignore[list-item]


# --- SQLite: the table comes with the schema ---------------------------------------------------
def test_a_database_of_an_older_schema_gains_the_spend_and_queue_tables(tmp_path):
    from cross_instance.hostfacts import identity as hostinfo
    from cross_instance.stores.sqlite.schema import MIGRATIONS, SCHEMA_VERSION

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with sqlite3.connect(state / DB_NAME) as conn:
        for version in range(6):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute("INSERT INTO groups(key, lim) VALUES('*', 3)")
        conn.execute("INSERT INTO meta(key, value) VALUES('boot_id', ?)", (hostinfo.boot_id(),))
        conn.execute("PRAGMA user_version=6")
    store = SqliteStore(state)
    try:
        assert [(g.key, g.limit) for g in store.snapshot().groups] == [("*", 3)]
        assert store.add_spend([(keys()[0], 9, later(store))]) == [9]
        assert store.read_spend(keys()[:1]) == [9]
        store.register_instance(record("a"))
        store.put_task("a", "t", "tool", 0, "{}", 3)
        assert store.take_task("a", 10**9).task_id == "t"
    finally:
        store.close()
    with sqlite3.connect(state / DB_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 8


def test_spend_survives_a_reboot_unlike_leases(tmp_path):
    store = SqliteStore(tmp_path / "state")
    store.add_spend([(keys()[0], 9, later(store))])
    store.close()
    with sqlite3.connect(tmp_path / "state" / DB_NAME) as conn:
        conn.execute("UPDATE meta SET value='old-boot' WHERE key='boot_id'")
    store = SqliteStore(tmp_path / "state")
    try:
        assert store.read_spend(keys()[:1]) == [9]
    finally:
        store.close()


@pytest.mark.parametrize("size", [0, 50, 1024])
def test_a_truncated_database_is_refused_before_any_spend(tmp_path, size):
    store = SqliteStore(tmp_path / "state")
    store.add_spend([(keys()[0], 9, later(store))])
    store.close()
    with open(tmp_path / "state" / DB_NAME, "r+b") as f:
        f.truncate(size)
    with pytest.raises(StoreCorrupt, match=DB_NAME):
        SqliteStore(tmp_path / "state")


def test_the_daemon_refuses_what_its_clients_would_not_send(tmp_path, clock):
    """A client of another make (a raw body) gets the same refusals from the daemon: a key
    that is not a spend key, an amount out of range; nothing is kept."""
    from cross_instance.stores.remote.store import RemoteStore
    from tests.conftest import serve_store

    with serve_store(SqliteStore(tmp_path / "state", clock=clock)) as addr:
        store = RemoteStore(addr)
        exp = later(store)
        for changes in ([("r:openai", 1, exp)], [(keys()[0], -1, exp)],
                        [(keys()[0], MAX_COUNT + 1, exp)], [(keys()[0], 1, -5)],
                        [(keys()[0] + "\n", 1, exp)]):
            with pytest.raises(InvalidArgument):
                store._call("add_spend", changes)
        with pytest.raises(InvalidArgument):
            store._call("read_spend", ["spend:2027-1-15:*"])
        assert store.read_spend(keys()) == [0, 0, 0, 0]
        store.close()
