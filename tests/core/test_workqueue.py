"""The work queue's pure rules (issue 18's core): one order for taking and stealing, only
queued tasks move, stealing only by the idle from the busiest, a lost lease requeues with one
more attempt (or fails at the bound) and fences the old worker out, stats add up."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from cross_instance.core.workqueue import (
    STATES,
    QueueState,
    StealingStats,
    Task,
    after_lost_lease,
    may_settle,
    next_task,
    run_order,
    should_attempt_work_stealing,
    steal_candidates,
    stealing_summary,
)

tasks = st.builds(
    Task, task_id=st.text(min_size=1, max_size=8), owner=st.sampled_from(["a", "b"]),
    tool_name=st.just("tool"), priority=st.integers(-3, 3), payload=st.just("{}"),
    enqueued_wall_ms=st.integers(0, 5), seq=st.integers(0, 1000),
    attempts=st.integers(0, 5), state=st.sampled_from(STATES), fence=st.integers(0, 9))
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


def test_priority_then_age_then_sequence() -> None:
    base = Task("x", "a", "t", 0, "{}", 10, 5)
    older = replace(base, task_id="older", enqueued_wall_ms=9)
    urgent = replace(base, task_id="urgent", priority=5, enqueued_wall_ms=99)
    running = replace(base, task_id="running", priority=9, state="running")
    assert next_task([base, older, urgent, running]) == urgent
    assert next_task([base, older, running]) == older
    assert next_task([replace(base, seq=7, task_id="a"), replace(base, seq=6, task_id="b")]
                     ).task_id == "b"  # type: ignore[union-attr]


@given(tasks, st.integers(1, 6))
def test_a_lost_lease_requeues_or_fails_and_fences_the_old_worker_out(task: Task,
                                                                     max_attempts: int) -> None:
    after = after_lost_lease(task, max_attempts)
    if task.state != "running":
        assert after == task
        return
    assert after.attempts == task.attempts + 1
    assert after.fence > task.fence and not may_settle(after, task.fence)
    assert after.state == ("failed" if after.attempts >= max_attempts else "queued")
    assert after.lease_until_ns is None and after.task_id == task.task_id


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
