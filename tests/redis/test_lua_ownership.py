"""The Redis store's claim decision (ownership.lua's ``decide``, used by claim_workflow.lua)
is exactly ``core.ownership.decide`` on the same state: a differential property test over
random workflow records, callers, owner verdicts and claim options, against the Redis on
127.0.0.1:6379 (the probe script only computes; no keys)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cross_instance.core.liveness import Domain, Verdict
from cross_instance.core.ownership import Force, Owner, WorkflowRecord, decide
from cross_instance.stores.redis import scripts

NOW = 1_764_000_000_000_000  # µs: the magnitude of the floor Redis's TIME gives
# any text a store keeps: tabs, newlines, colons, non-ASCII (no lone surrogates: not text)
TEXT = st.sampled_from(["a", "b", "a:b", "x\ty", "n\nl", "é", "😀", "p: q\t\n"]) | st.text(
    st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=8)


@pytest.fixture(scope="module")
def probe(shared_redis):
    script = shared_redis.register_script(scripts.source("ownership_probe"))
    return lambda query: script(keys=[], args=[json.dumps(query, ensure_ascii=False)])


@st.composite
def processes(draw, names):
    """A process of one of ``names`` (few values each, so that fields often coincide)."""
    return Owner(draw(st.sampled_from(names)), draw(st.sampled_from([1, 2, 4_194_304])),
                 Domain(draw(st.sampled_from(["h", "h2", "é:h"])),
                        draw(st.sampled_from(["b", "unknown-boot"])),
                        draw(st.sampled_from(["linux:pid:[1]", "portable:pid:[default]"]))),
                 draw(st.sampled_from([0, 1, 2**40])))


def changed(o: Owner, field: str, value: object) -> Owner:
    """``o`` with one field changed (the same instance id in another process, ...)."""
    if field in ("host", "boot_id", "pid_ns"):
        return replace(o, domain=replace(o.domain, **{field: value}))
    return replace(o, **{field: value})


epochs = st.integers(0, 3) | st.integers(NOW - 2, NOW + 3)


@st.composite
def states(draw):
    names = draw(st.lists(TEXT, min_size=1, max_size=3, unique=True))
    caller = draw(processes(names))
    field = draw(st.sampled_from(["instance_id", "pid", "host", "boot_id", "pid_ns",
                                  "start_ticks"]))
    value = {"instance_id": draw(TEXT), "pid": caller.pid + 1, "host": caller.domain.host + "x",
             "boot_id": caller.domain.boot_id + "\t", "pid_ns": caller.domain.pid_ns + ":",
             "start_ticks": caller.start_ticks + 1}[field]
    owner = draw(st.sampled_from([None, caller, changed(caller, field, value)])
                 | processes(names))
    current = None
    if draw(st.integers(0, 3)):  # mostly a workflow seen before
        current = WorkflowRecord(draw(TEXT), owner, draw(epochs), 0, 0)
    verdict = draw(st.none() | st.sampled_from(Verdict))
    force = draw(st.sampled_from([Force.NO, Force.NO, Force.DEAD, Force.LIVE]))
    return current, caller, verdict, draw(st.booleans()), draw(st.booleans()), force, draw(epochs)


def encode(current: WorkflowRecord | None, caller: Owner, verdict: Verdict | None,
           claim: bool, auto_claim: bool, force: Force, floor: int) -> dict:
    """The state as claim_workflow.lua has it: the workflow hash (owner fields absent once
    released), the caller's instance record, and its arguments."""
    w = None
    if current is not None:
        w = {"epoch": current.epoch, "owner": None}
        if current.owner is not None:
            o = current.owner
            w.update(owner=o.instance_id, pid=o.pid, ticks=o.start_ticks, host=o.domain.host,
                     boot=o.domain.boot_id, pidns=o.domain.pid_ns)
    c = {"id": caller.instance_id, "pid": caller.pid, "ticks": caller.start_ticks,
         "host": caller.domain.host, "boot": caller.domain.boot_id,
         "pidns": caller.domain.pid_ns}
    return {"w": w, "caller": c, "verdict": None if verdict is None else verdict.value,
            "claim": claim, "auto_claim": auto_claim, "force": force.value, "floor": floor}


ME = Owner("a", 2, Domain("h", "b", "linux:pid:[1]"), 1)
RESTARTED = Owner("a", 3, Domain("h", "b", "linux:pid:[1]"), 9)  # the same id, a new process
OTHER_NS = Owner("a", 2, Domain("h", "b", "linux:pid:[2]"), 1)  # only the pid namespace differs


def wf(owner: Owner | None, epoch: int) -> WorkflowRecord:
    return WorkflowRecord("w:\t1", owner, epoch, 0, 0)


@settings(max_examples=600, deadline=None)
@given(states())
@example((None, ME, None, True, True, Force.NO, NOW))  # never seen: the epoch starts at the floor
@example((None, ME, None, False, True, Force.NO, 0))  # never seen, only checked
@example((wf(None, 7), ME, None, False, False, Force.DEAD, NOW))  # released, force without claim
@example((wf(RESTARTED, 4), ME, Verdict.ALIVE, True, True, Force.NO, 0))  # restarted: not ours
@example((wf(OTHER_NS, 4), ME, Verdict.UNKNOWN, True, True, Force.NO, 0))
@example((wf(RESTARTED, 4), ME, Verdict.DEAD, True, True, Force.NO, 0))  # auto-claimed
@example((wf(RESTARTED, 4), ME, Verdict.DEAD, True, False, Force.NO, 0))  # auto-claim off
@example((wf(RESTARTED, 4), ME, None, True, True, Force.LIVE, 0))  # no verdict, forced
@example((wf(ME, 4), ME, Verdict.DEAD, True, True, Force.LIVE, 0))  # the caller owns it
def test_lua_claim_decision_matches_the_core(probe, state):
    current, caller, verdict, claim, auto_claim, force, floor = state
    # as the SQLite store decides: a workflow never seen starts at the floor, as if released
    start = current or WorkflowRecord("w", None, floor, 0, 0)
    expected = decide(start, caller, verdict, claim, auto_claim, force)
    got = probe(encode(current, caller, verdict, claim, auto_claim, force, floor))
    assert got == [expected.action.value.encode(), expected.epoch, expected.reason.encode()]
