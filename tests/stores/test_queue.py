"""The shared work queue (issue 18), on every store: run order, fenced settling (a task is
settled once even if it ran twice), stealing that moves a queued task and never a running
one, lost leases and gone instances requeue and never lose a task, stats that add up, and
names of every kind kept as given."""

from __future__ import annotations

import json

import pytest

from cross_instance.core.workqueue import MAX_TEXT, ORPHANED, next_task
from cross_instance.errors import InvalidArgument, NotRegisteredError
from tests.conftest import record

SEC = 1_000_000_000
LEASE = 5 * SEC


def setup(store, *ids, lease_s=60.0):
    for i in ids:
        store.register_instance(record(i, lease_s=lease_s))


def put(store, owner, task_id, priority=0, max_attempts=3, payload=None):
    return store.put_task(owner, task_id, "tool", priority,
                          json.dumps(payload if payload is not None else {"n": task_id}),
                          max_attempts)


def test_take_runs_in_priority_then_enqueue_order_and_put_is_idempotent(store):
    setup(store, "a")
    first = put(store, "a", "t1")
    assert (first.state, first.owner, first.attempts, first.fence) == ("queued", "a", 0, 0)
    assert json.loads(first.payload) == {"n": "t1"}
    put(store, "a", "t2")
    put(store, "a", "urgent", priority=5)
    put(store, "a", "low", priority=-5)
    again = store.put_task("a", "t1", "other", 9, "[1]", 3)  # a resent put: the same task
    assert again == first
    order = []
    while (task := store.take_task("a", LEASE)) is not None:
        assert task.state == "running" and task.attempts == 1 and task.fence == 1
        order.append(task.task_id)
    assert order == ["urgent", "t1", "t2", "low"]
    assert store.take_task("a", LEASE) is None


def test_settle_needs_the_current_fence_and_a_resent_settle_gets_the_same_answer(store):
    setup(store, "a")
    put(store, "a", "t")
    run = store.take_task("a", LEASE)
    assert store.settle_task("t", run.fence + 1, "done", "1") is None  # a forged fence
    done = store.settle_task("t", run.fence, "done", '{"ok": true}')
    assert done.state == "done" and json.loads(done.result) == {"ok": True}
    assert store.settle_task("t", run.fence, "done", '{"ok": true}') == done
    assert store.settle_task("t", run.fence, "failed", '"late"') is None
    assert store.get_task("t") == done
    assert store.list_tasks(state="done") == [done]
    assert store.renew_task("t", run.fence, LEASE) is None  # settled: nothing to renew


def test_a_retry_requeues_until_the_attempts_are_spent_and_failures_stay_visible(store):
    setup(store, "a")
    put(store, "a", "t", max_attempts=2)
    run = store.take_task("a", LEASE)
    back = store.settle_task("t", run.fence, "retry", '"boom"')
    assert (back.state, back.attempts, back.error) == ("queued", 1, '"boom"')
    assert store.settle_task("t", run.fence, "retry", '"boom"') == back  # sent again
    run2 = store.take_task("a", LEASE)
    assert run2.attempts == 2 and run2.fence > run.fence
    failed = store.settle_task("t", run2.fence, "retry", '"boom again"')
    assert (failed.state, failed.error) == ("failed", '"boom again"')
    assert store.list_tasks(state="failed") == [failed]
    counts = {c.instance_id: c for c in store.queue_counts()}
    assert (counts["a"].queued, counts["a"].running, counts["a"].failed) == (0, 0, 1)


def test_a_lost_lease_requeues_and_the_old_worker_can_settle_nothing(store, clock):
    setup(store, "a", "b", lease_s=600)
    put(store, "a", "t", max_attempts=2)
    old = store.take_task("a", 2 * SEC)
    assert store.renew_task("t", old.fence, 2 * SEC).lease_until_ns == clock.now + 2 * SEC
    clock.advance(3)
    assert store.renew_task("t", old.fence, 2 * SEC) is None  # past its lease
    # not requeued yet, and nobody else runs it: still, a run whose lease ended settles nothing
    assert store.get_task("t").state == "running"
    for outcome in ("done", "failed", "retry"):
        assert store.settle_task("t", old.fence, outcome, "1") is None
    assert store.settle_and_take("t", old.fence, "done", "1", "a", 2 * SEC) == (None, None)
    again = store.take_task("a", 2 * SEC)  # the expired run goes back first
    assert again.task_id == "t" and again.attempts == 2 and again.fence > old.fence
    assert store.settle_task("t", old.fence, "done", "1") is None
    lost = [e for e in store.events() if e.kind == "task_lost"]
    assert [(e.data["taskId"], e.data["state"]) for e in lost] == [("t", "queued")]
    clock.advance(3)
    store.reap()  # the last attempt's lease ran out too: failed, and visible
    assert store.get_task("t").state == "failed"
    assert store.settle_task("t", again.fence, "done", "1") is None


def test_steal_moves_the_best_queued_task_of_the_busiest_and_never_a_running_one(store):
    setup(store, "busy", "calm", "thief")
    for i in range(4):
        put(store, "busy", f"b{i}", priority=1 if i == 2 else 0)
    for i in range(2):
        put(store, "calm", f"c{i}")
    running = store.take_task("busy", LEASE)
    assert running.task_id == "b2"
    stolen = store.steal_task("thief", LEASE, 2)
    assert (stolen.task_id, stolen.owner, stolen.state) == ("b0", "thief", "running")
    assert stolen.fence == 1 and stolen.attempts == 1
    # busy and calm hold 2 queued each now (not more than 2): nothing to steal
    assert store.steal_task("thief", LEASE, 2) is None
    nxt = store.steal_task("thief", LEASE, 1)  # a tie: calm was never stolen from
    assert nxt.task_id == "c0"
    assert store.get_task("b2").state == "running" and store.get_task("b2").owner == "busy"
    assert store.settle_task("b0", stolen.fence, "done", "0") is not None
    counts = {c.instance_id: c for c in store.queue_counts()}
    thief = counts["thief"].stealing
    assert (thief.total_attempts, thief.successful_steals, thief.failed_attempts) == (3, 2, 1)
    assert thief.success_rate == pytest.approx(2 / 3) and thief.avg_latency_ms >= 0
    assert (counts["thief"].running, counts["thief"].done) == (1, 1)
    assert (counts["busy"].queued, counts["busy"].running) == (2, 1)
    store.reset_stealing_stats("thief")
    assert {c.instance_id: c for c in store.queue_counts()}["thief"].stealing.total_attempts == 0


def test_a_gone_instance_hands_its_tasks_to_the_pool_and_nothing_is_lost(store, clock):
    setup(store, "dies", lease_s=3)
    setup(store, "lives", lease_s=600)
    for i in range(3):
        put(store, "dies", f"t{i}")
    run = store.take_task("dies", LEASE)
    clock.advance(4)
    assert store.reap() == ["dies"]
    pool = store.list_tasks(owner=ORPHANED)
    assert sorted(t.task_id for t in pool) == ["t0", "t1", "t2"]
    assert all(t.state == "queued" for t in pool)
    assert store.get_task("t0").attempts == 1 and store.get_task("t0").fence > run.fence
    taken = []
    while (task := store.take_task("lives", LEASE)) is not None:
        taken.append(task.task_id)
        store.settle_task(task.task_id, task.fence, "done", "null")
    assert taken == ["t0", "t1", "t2"]
    assert store.settle_task("t0", run.fence, "done", "1") is None
    with pytest.raises(NotRegisteredError):
        store.take_task("dies", LEASE)
    with pytest.raises(NotRegisteredError):
        put(store, "dies", "late")
    counts = {c.instance_id: c for c in store.queue_counts()}
    assert counts["lives"].done == 3 and counts[ORPHANED].queued == 0
    assert sum(c.queued + c.running for c in counts.values()) == 0


def test_unregister_hands_over_and_take_prefers_the_better_of_own_and_pool(store):
    setup(store, "a", "b")
    put(store, "a", "pooled", priority=3)
    put(store, "b", "own")
    store.unregister_instance("a")
    assert store.get_task("pooled").owner == ORPHANED
    assert store.take_task("b", LEASE).task_id == "pooled"
    assert store.take_task("b", LEASE).task_id == "own"


def test_names_of_every_kind_are_kept_as_given(store):
    setup(store, "a")
    odd = ["tab\there", "new\nline", "ключ", "emoji 🎉", "x" * 256, " ", "{\"a\":1}"]
    for i, name in enumerate(odd):
        store.put_task("a", name, name[:256], i, json.dumps({"name": name}), 3)
    seen = store.list_tasks(owner="a", state="queued", limit=100)
    assert [t.task_id for t in seen] == list(reversed(odd))  # higher priority first
    for t in seen:
        assert json.loads(t.payload) == {"name": t.task_id} and t.tool_name == t.task_id[:256]
    one = store.take_task("a", LEASE)
    assert store.settle_task(one.task_id, one.fence, "done", json.dumps(odd)).result == \
        json.dumps(odd)


@pytest.mark.parametrize("bad", [
    {"task_id": ""}, {"task_id": "x" * 257}, {"priority": 5000}, {"payload": "not json"},
    {"max_attempts": 0}, {"tool_name": None}])
def test_a_task_no_store_could_keep_is_refused_and_nothing_is_queued(store, bad):
    setup(store, "a")
    args = {"owner": "a", "task_id": "t", "tool_name": "tool", "priority": 0,
            "payload": "{}", "max_attempts": 3, **bad}
    with pytest.raises(InvalidArgument):
        store.put_task(**args)
    assert store.list_tasks() == []


def test_bad_leases_outcomes_and_limits_are_refused(store):
    setup(store, "a")
    put(store, "a", "t")
    with pytest.raises(InvalidArgument, match="lease_ns"):
        store.take_task("a", 0)
    run = store.take_task("a", LEASE)
    with pytest.raises(InvalidArgument, match="outcome"):
        store.settle_task("t", run.fence, "maybe", "1")
    with pytest.raises(InvalidArgument, match="result"):
        store.settle_task("t", run.fence, "done", "{")
    with pytest.raises(InvalidArgument, match="limit"):
        store.list_tasks(limit=0)
    with pytest.raises(InvalidArgument, match="state"):
        store.list_tasks(state="lost")
    assert store.get_task("t").state == "running"


@pytest.mark.parametrize("bad", ["\ud800", None, ["x"], "", "x" * 257, "nul\x00"])
def test_a_lookup_by_an_id_no_store_could_hold_is_refused_by_name(store, bad):
    setup(store, "a")
    put(store, "a", "t")
    with pytest.raises(InvalidArgument, match="task_id"):
        store.get_task(bad)
    if bad is not None:  # owner=None lists every owner
        with pytest.raises(InvalidArgument, match="owner"):
            store.list_tasks(owner=bad if bad != "" else 7)
    assert [t.task_id for t in store.list_tasks(owner="")] == []  # "": the shared pool


def test_payloads_up_to_the_bound_are_kept_whatever_their_characters(store):
    """Up to ``MAX_TEXT`` bytes of JSON text, on every store: the remote one sends it as
    UTF-8 (an escaped "é" is 6 bytes), escaped once more in its request's JSON."""
    setup(store, "a")
    quotes = json.dumps(["\"" * ((MAX_TEXT - 8) // 2)])  # every character escaped: \"
    assert len(quotes.encode()) <= MAX_TEXT
    payloads = {"accents": json.dumps("é" * ((MAX_TEXT - 2) // 2), ensure_ascii=False),
                "emoji": json.dumps("😀" * ((MAX_TEXT - 2) // 4), ensure_ascii=False),
                "quotes": quotes}
    assert all(MAX_TEXT - 8 <= len(text.encode()) <= MAX_TEXT for text in payloads.values())
    for task_id, text in payloads.items():
        assert store.put_task("a", task_id, "", 0, text, 3).payload == text
    for task_id, text in payloads.items():
        assert store.get_task(task_id).payload == text


def test_list_matches_the_rules_of_the_core(store):
    setup(store, "a", "b")
    for i in range(6):
        put(store, "a" if i % 2 else "b", f"t{i}", priority=i % 3)
    queued = store.list_tasks(state="queued")
    assert queued[0] == next_task(queued)
    taken = store.take_task("b", LEASE)
    assert taken == next_task(t for t in queued if t.owner == "b").__class__(
        **{**_fields(next_task(t for t in queued if t.owner == "b")),
           "state": "running", "attempts": 1, "fence": 1,
           "lease_until_ns": taken.lease_until_ns})
    assert [t.task_id for t in store.list_tasks(state="running")] == [taken.task_id]
    assert len(store.list_tasks(limit=3)) == 3


def _fields(task):
    return {name: getattr(task, name) for name in task.__dataclass_fields__}


def test_settle_and_take_is_done_then_next_in_one_step(store):
    setup(store, "a", "b")
    for i in range(2):
        put(store, "a", f"t{i}")
    first = store.take_task("a", LEASE)
    done, nxt = store.settle_and_take("t0", first.fence, "done", "0", "a", LEASE)
    assert (done.task_id, done.state) == ("t0", "done")
    assert (nxt.task_id, nxt.state, nxt.owner, nxt.attempts) == ("t1", "running", "a", 1)
    # sent again (a lost reply): the settle answers the same, and nothing else is taken
    assert store.settle_and_take("t0", first.fence, "done", "0", "a", LEASE) == (done, None)
    # a stale fence settles nothing and takes nothing
    put(store, "a", "t2")
    assert store.settle_and_take("t1", nxt.fence - 1, "done", "1", "a", LEASE) == (None, None)
    assert store.get_task("t2").state == "queued"
    # an unregistered taker: nothing is done at all
    store.unregister_instance("b")
    with pytest.raises(NotRegisteredError):
        store.settle_and_take("t1", nxt.fence, "done", "1", "b", LEASE)
    assert store.get_task("t1").state == "running"
    done, last = store.settle_and_take("t1", nxt.fence, "retry", '"again"', "a", LEASE)
    assert done.state == "queued" and last.task_id == "t1"  # the retry is the next in order
    with pytest.raises(InvalidArgument, match="result"):
        store.settle_and_take("t1", last.fence, "done", "{", "a", LEASE)
