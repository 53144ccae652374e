"""The SQLite store reads only the waiters that may come before the asking one.

A decision used to read the whole queue: with 180 waiters every question cost about a
millisecond, and a process with 60 asyncio tasks spent most of its CPU there. Now a queued
wait reads the waiters ahead of it in ``arbiter.queue_key`` order (instances below their
share first, then by place). This property pins the narrowed read to that order: for any
queue, any holders and any asking wait, the rows read include every waiter that comes
before the asking one (so the decision is the one the whole queue gives) and, when the wait
has a place, none at or after it."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from cross_instance.core.arbiter import Holder, Need, queue_key
from cross_instance.stores.sqlite.permits import _ahead_sql

INSTANCES = ["a", "b", "c", "d"]

holders_st = st.dictionaries(
    st.sampled_from(INSTANCES),
    st.tuples(st.integers(0, 4), st.integers(0, 4)).map(
        lambda t: Holder(used=t[0], reserved=0, share=t[1])),
)


@settings(max_examples=300, deadline=None)
@given(queue=st.lists(st.sampled_from(INSTANCES), max_size=12), holders=holders_st,
       me=st.sampled_from(INSTANCES), mine=st.integers(-1, 11))
def test_the_rows_read_are_the_waiters_ahead(queue: list[str], holders: dict[str, Holder],
                                             me: str, mine: int) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE waiters(ticket INTEGER PRIMARY KEY AUTOINCREMENT, "
                 "instance_id TEXT, rates TEXT, slots TEXT, seen_ns INTEGER, wait INTEGER)")
    for i, inst in enumerate(queue):
        conn.execute("INSERT INTO waiters(instance_id, rates, slots, seen_ns, wait) "
                     "VALUES(?, '[]', '[]', 0, ?)", (inst, 1000 + i))
    rows = conn.execute("SELECT ticket, instance_id FROM waiters").fetchall()
    place = rows[mine][0] if 0 <= mine < len(rows) else None  # -1 / beyond: a new request
    if place is not None:
        me = rows[mine][1]

    holder = holders.get(me)
    over = holder is None or holder.used >= holder.share
    under = [i for i, h in holders.items() if h.used < h.share]
    sql = _ahead_sql(place is not None, len(under), over)
    read = {r[0] for r in conn.execute(sql, () if "?" not in sql else (place, *under))}

    my_key = queue_key(Need(me, (), (), place), holders)
    ahead = {t for t, inst in rows if t != place and queue_key(Need(inst, (), (), t), holders)
             < my_key}
    assert ahead <= read  # nobody ahead is missed
    if place is not None:
        assert read == ahead  # and, for a queued wait, nobody else is read
