"""The work queue's pure rules (issue 18's core): one order for taking and stealing, only
queued tasks move, stealing only by the idle from the busiest, a lost lease requeues with one
more attempt (or fails at the bound) and fences the old worker out, stats add up."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cross_instance.core.workqueue import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    ORPHANED,
    STATES,
    OwnerCounts,
    QueueState,
    StealingStats,
    Task,
    after_lost_lease,
    check_new_task,
    may_settle,
    next_task,
    queue_score,
    run_order,
    settle,
    should_attempt_work_stealing,
    start_run,
    steal_candidates,
    steal_victim,
    stealing_summary,
)
from cross_instance.errors import InvalidArgument

tasks = st.builds(
    Task, task_id=st.text(min_size=1, max_size=8), owner=st.sampled_from(["a", "b"]),
    tool_name=st.just("tool"), priority=st.integers(-3, 3), payload=st.just("{}"),
    enqueued_wall_ms=st.integers(0, 5), seq=st.integers(0, 1000),
    attempts=st.integers(0, 5), state=st.sampled_from(STATES), fence=st.integers(0, 9),
    max_attempts=st.integers(1, 5))
states = st.builds(QueueState, instance_id=st.sampled_from(["a", "b", "c", "d"]),
                   pending=st.integers(0, 6), running=st.integers(0, 2),
                   avg_latency_ms=st.none(), active_orchestrations=st.integers(0, 2),
                   wall_ms=st.just(0), stolen_from_ms=st.integers(0, 3))


@given(st.lists(tasks, max_size=12), st.randoms())
def test_the_next_task_is_the_first_queued_one_whatever_the_order(found: list[Task],
                                                                  rnd: object) -> None:
    shuffled = list(found)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    chosen = next_task(shuffled)
    queued = [t for t in found if t.state == "queued"]
    if not queued:
        assert chosen is None
        return
    assert chosen is not None and chosen.state == "queued"  # a running task never moves
    assert all(run_order(chosen) <= run_order(t) for t in queued)
    unshuffled = next_task(found)
    assert unshuffled is not None and run_order(unshuffled) == run_order(chosen)


def test_priority_then_the_first_enqueued() -> None:
    base = Task("x", "a", "t", 0, "{}", 10, 5)
    older = replace(base, task_id="older", enqueued_wall_ms=99, seq=4)  # the wall clock stepped
    urgent = replace(base, task_id="urgent", priority=5, seq=99)
    running = replace(base, task_id="running", priority=9, state="running")
    assert next_task([base, older, urgent, running]) == urgent
    assert next_task([base, older, running]) == older


@given(st.integers(MIN_PRIORITY, MAX_PRIORITY), st.integers(0, 2**42 - 1),
       st.integers(MIN_PRIORITY, MAX_PRIORITY), st.integers(0, 2**42 - 1))
def test_the_score_is_the_run_order_and_exact_in_a_double(p1: int, s1: int, p2: int,
                                                          s2: int) -> None:
    a, b = queue_score(p1, s1), queue_score(p2, s2)
    assert float(a) == a and float(b) == b
    assert (a < b) == ((-p1, s1) < (-p2, s2))


@given(tasks, st.integers(1, 10**12))
def test_a_run_counts_an_attempt_and_fences_every_earlier_run_out(task: Task,
                                                                  lease: int) -> None:
    run = start_run(replace(task, state="queued"), "thief", lease)
    assert (run.state, run.owner, run.lease_until_ns) == ("running", "thief", lease)
    assert run.attempts == task.attempts + 1 and run.fence == task.fence + 1
    now = lease - 1  # the last moment the run holds it
    assert settle(run, task.fence, "done", "1", now) is None
    assert settle(run, run.fence, "done", "1", lease) is None  # its lease has ended
    assert not may_settle(run, run.fence, lease) and may_settle(run, run.fence, now)
    done = settle(run, run.fence, "done", "1", now)
    assert done is not None and done.state == "done" and done.result == "1"
    later = lease + 10**9  # a lost reply's resend gets the same answer, after the lease too
    assert settle(done, run.fence, "done", "1", later) == done
    assert settle(done, run.fence, "done", "2", now) is None  # not a repeat: refused
    assert settle(done, run.fence, "failed", "1", now) is None


@given(tasks)
def test_a_retry_requeues_until_the_attempts_are_spent(task: Task) -> None:
    run = replace(task, state="running", lease_until_ns=10)
    after = settle(run, run.fence, "retry", '"boom"', 9)
    assert after is not None and after.error == '"boom"'
    assert after.state == ("failed" if run.attempts >= run.max_attempts else "queued")
    assert settle(after, run.fence, "retry", '"boom"', 9) == after
    assert settle(after, run.fence, "done", "1", 9) is None


def test_instance_ids_and_the_pool_in_the_victim_choice() -> None:
    counts = [OwnerCounts("a", queued=5, stolen_from_ns=9), OwnerCounts("b", queued=5),
              OwnerCounts(ORPHANED, queued=50), OwnerCounts("me", queued=60),
              OwnerCounts("c", queued=2)]
    assert steal_victim("me", counts) == "b"  # a tie: the one stolen from longest ago
    assert steal_victim("me", counts, min_queued=5) is None
    assert steal_victim("b", counts) == "me"
    assert steal_victim("me", counts[:1]) == "a"


@given(tasks, st.integers(1, 6), st.sampled_from([None, "", "b"]))
def test_a_lost_lease_requeues_or_fails_and_fences_the_old_worker_out(
        task: Task, max_attempts: int, owner: str | None) -> None:
    task = replace(task, max_attempts=max_attempts)
    after = after_lost_lease(task, owner)
    if task.state != "running":
        assert after == task
        return
    assert after.attempts == task.attempts
    assert after.fence > task.fence and not may_settle(after, task.fence, 0)
    assert settle(after, task.fence, "done", "1", 0) is None
    assert after.state == ("failed" if task.attempts >= max_attempts else "queued")
    assert after.owner == (task.owner if owner is None else owner)
    assert after.lease_until_ns is None and after.task_id == task.task_id


@pytest.mark.parametrize(("field", "value"), [
    ("task_id", ""), ("task_id", "x" * 257), ("task_id", "a\x00b"), ("task_id", "\ud800"),
    ("tool_name", 3), ("priority", 1001), ("priority", True), ("max_attempts", 0),
    ("payload", "{"), ("payload", "x" * (1 << 20)), ("payload", None)])
def test_a_new_task_no_store_could_keep_is_refused_by_name(field: str, value: object) -> None:
    good: dict[str, object] = {"task_id": "t", "tool_name": "tool", "priority": 0,
                               "payload": "{}", "max_attempts": 3}
    check_new_task(**good)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=field):
        check_new_task(**{**good, field: value})  # type: ignore[arg-type]


@given(states, st.lists(states, max_size=5, unique_by=lambda s: s.instance_id), st.integers(0, 4))
def test_only_the_idle_steal_and_only_from_the_busy(mine: QueueState,
                                                    others: list[QueueState],
                                                    min_queued: int) -> None:
    wanted = should_attempt_work_stealing(mine, others, min_queued)
    victims = steal_candidates(mine.instance_id, others, None, min_queued)
    if mine.pending or mine.running:
        assert not wanted
    else:
        assert wanted == bool(victims)
    assert mine.instance_id not in victims
    pending = {s.instance_id: s.pending for s in others}
    assert all(pending[v] > min_queued for v in victims)
    assert [pending[v] for v in victims] == sorted((pending[v] for v in victims), reverse=True)


def test_candidates_busiest_first_then_least_recently_stolen_from() -> None:
    def state(name: str, pending: int, stolen: int = 0) -> QueueState:
        return QueueState(name, pending, 0, None, 0, 0, stolen)

    found = [state("a", 5, stolen=9), state("b", 5, stolen=1), state("c", 9), state("d", 1),
             state("me", 50)]
    assert steal_candidates("me", found) == ["c", "b", "a"]
    assert steal_candidates("me", found, top_n=1) == ["c"]
    assert stealing_summary("me", found) == {
        "remoteInstances": 4, "totalPendingTasks": 20, "stealableTasks": 19,
        "idleInstances": 0, "busyInstances": 3}


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1000)), max_size=30))
def test_stats_add_up(attempts: list[tuple[bool, float]]) -> None:
    stats = StealingStats()
    for stolen, latency in attempts:
        stats = stats.counted(stolen, latency)
    ok = sum(1 for stolen, _ in attempts if stolen)
    shown = stats.to_json()
    assert shown["totalAttempts"] == len(attempts)
    assert shown["successfulSteals"] + shown["failedAttempts"] == len(attempts)
    assert shown["successfulSteals"] == ok
    assert 0 <= shown["successRate"] <= 1
    assert set(shown) == {"totalAttempts", "successfulSteals", "failedAttempts",
                          "successRate", "avgLatencyMs"}


def test_the_seeds_shapes() -> None:
    task = Task("t1", "a", "grep", 2, "{}", 1_700_000_000_000, 1)
    assert task.stealable_entry() == {"id": "t1", "toolName": "grep", "priority": "2",
                                      "instanceId": "a",
                                      "enqueuedAt": "2023-11-14T22:13:20.000+00:00"}
    shown = QueueState("a", 3, 1, 12.5, 2, 1_700_000_000_000).to_json()
    assert shown["pendingTaskCount"] == 3 and shown["timestamp"].startswith("2023-11-14")
