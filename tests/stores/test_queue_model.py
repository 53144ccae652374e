"""A model test of the work queue (issue 18, in the style of ``test_ownership_model``): random
sequences of puts (some sent twice), takes, steals, completions and failures with the current
or a stale fence, renewals, clock moves, instance deaths (lease run out, then reaped) and
graceful leaves, on every store kind, checked step by step against a plain model of the
promises: the run order, the victim of a steal, that only queued tasks move, that a task is
settled once, and that no task is ever lost. Names come from the whole range the API takes."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cross_instance.config.rules import instance_id_problem
from cross_instance.core import workqueue as rules
from cross_instance.core.workqueue import MAX_TASK_ID, ORPHANED, OwnerCounts
from cross_instance.errors import NotRegisteredError
from cross_instance.stores import open_store
from tests.conftest import STORE_KINDS, FakeClock, record, serve_store

LEASE_S = 5.0  # instances
RUN_NS = 2_000_000_000  # a run's lease
INSTANCE_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,40}", fullmatch=True).filter(
    lambda s: instance_id_problem(s) is None)
TASK_IDS = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                   min_size=1, max_size=MAX_TASK_ID)
PICK = st.integers(0, 2)


@dataclass
class Modelled:
    task_id: str
    owner: str
    priority: int
    seq: int  # the order of the puts
    max_attempts: int
    state: str = "queued"
    attempts: int = 0
    fence: int = 0
    lease_until: int | None = None
    text: str | None = None


class QueueModel(RuleBasedStateMachine):
    kind = "sqlite"

    @initialize(ids=st.lists(INSTANCE_IDS, min_size=3, max_size=3, unique=True))
    def start(self, ids: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pi-xi-qmodel-"))
        self.clock = FakeClock()
        self.stack = ExitStack()
        if self.kind in ("sqlite", "remote"):
            url = f"sqlite://{self.dir / 'state'}"
        else:
            url = (f"redis://127.0.0.1:6379/0?prefix=pi-qmodel-{uuid.uuid4().hex[:12]}:"
                   + ("&lua=scripts" if self.kind == "redis-scripts" else ""))
        self.local = open_store(url, clock=self.clock)
        if self.kind not in ("sqlite", "remote"):
            assert self.local.declare_empty()
        if self.kind == "remote":
            addr = self.stack.enter_context(serve_store(self.local))
            self.store = open_store(f"http://{addr}")
        else:
            self.store = self.local
        self.ids = ids
        self.alive: set[str] = set()
        self.seen: dict[str, int] = {}
        self.tasks: dict[str, Modelled] = {}
        self.names: list[str] = []
        self.steals = dict.fromkeys(ids, (0, 0))  # (successes, misses)
        self.stolen_from: dict[str, int] = {}
        self.settled_once: dict[str, int] = {}
        for i in ids:
            self._register(i)

    def teardown(self) -> None:
        if not hasattr(self, "store"):
            return
        if self.store is not self.local:
            self.store.close()
        self.stack.close()
        if hasattr(self.local, "drop_everything"):
            self.local.drop_everything()
        self.local.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _register(self, name: str) -> None:
        self.store.register_instance(record(name, lease_s=LEASE_S))
        self.alive.add(name)
        self.seen[name] = self.clock.now

    # --- the model's own rules (``core.workqueue`` is what it is held to) --------------------
    def _lost(self, t: Modelled, owner: str | None) -> None:
        t.fence += 1
        t.lease_until = None
        if owner is not None:
            t.owner = owner
        if t.attempts >= t.max_attempts:
            t.state, t.text = "failed", t.text or '"the lease was lost on every attempt"'
        else:
            t.state = "queued"

    def _expire(self) -> None:
        for t in sorted(self.tasks.values(), key=lambda t: (t.lease_until or 0, t.seq)):
            if t.state == "running" and t.lease_until is not None \
                    and t.lease_until <= self.clock.now:
                self._lost(t, None)

    def _best(self, owners: tuple[str, ...]) -> Modelled | None:
        queued = [t for t in self.tasks.values() if t.state == "queued" and t.owner in owners]
        return min(queued, key=lambda t: (-t.priority, t.seq)) if queued else None

    def _counts(self) -> list[OwnerCounts]:
        out: dict[str, OwnerCounts] = {}
        for t in self.tasks.values():
            c = out.get(t.owner, OwnerCounts(t.owner))
            if t.state == "queued":
                c = replace(c, queued=c.queued + 1)
            out[t.owner] = c
        return [replace(c, stolen_from_ns=self.stolen_from.get(c.instance_id, 0))
                for c in out.values()]

    def _start(self, t: Modelled, runner: str) -> None:
        t.owner, t.state = runner, "running"
        t.attempts += 1
        t.fence += 1
        t.lease_until = self.clock.now + RUN_NS

    def _holds(self, t: Modelled, fence: int) -> bool:
        """``core.workqueue.may_settle``: the run holding ``fence`` runs it, its lease unended
        (one rule for renewing and settling)."""
        return t.state == "running" and t.fence == fence and t.lease_until is not None \
            and t.lease_until > self.clock.now

    def _settled(self, t: Modelled, outcome: str, text: str) -> None:
        """``core.workqueue.settle`` by the run holding the task."""
        t.lease_until = None
        if outcome == "done":
            t.state, t.text = "done", text
        elif outcome == "failed" or t.attempts >= t.max_attempts:
            t.state, t.text = "failed", text
        else:
            t.state, t.text = "queued", text
        self.settled_once[t.task_id] = self.settled_once.get(t.task_id, 0) + (
            t.state != "queued")

    def _check(self, got: Any, want: Modelled | None) -> None:
        if want is None:
            assert got is None
            return
        assert got is not None and got.task_id == want.task_id
        assert (got.owner, got.state, got.attempts, got.fence) == \
            (want.owner, want.state, want.attempts, want.fence)
        if want.state in ("done", "failed"):
            assert (got.result if want.state == "done" else got.error) == want.text

    # --- rules ----------------------------------------------------------------------------
    @rule(who=PICK, puts=st.lists(st.tuples(TASK_IDS, st.integers(-1, 1), st.integers(1, 2),
                                             st.booleans()), min_size=1, max_size=4))
    def put(self, who: int, puts: list[tuple[str, int, int, bool]]) -> None:
        for name, priority, attempts, again in puts:
            self._put(self.ids[who], name, priority, attempts, again)

    def _put(self, owner: str, name: str, priority: int, attempts: int, again: bool) -> None:
        if again and self.names:
            name = self.names[-1]  # a put sent twice: queued once
        try:
            got = self.store.put_task(owner, name, "tool", priority,
                                      json.dumps({"n": name}), attempts)
        except NotRegisteredError:
            assert owner not in self.alive
            return
        assert owner in self.alive
        if name not in self.tasks:
            self.tasks[name] = Modelled(name, owner, priority, len(self.names), attempts)
            self.names.append(name)
        assert got.task_id == name and got.payload == self.store.get_task(name).payload

    @rule(who=PICK)
    def take(self, who: int) -> None:
        me = self.ids[who]
        try:
            got = self.store.take_task(me, RUN_NS)
        except NotRegisteredError:
            assert me not in self.alive
            return
        self._expire()
        want = self._best((me, ORPHANED))
        if want is not None:
            self._start(want, me)
        self._check(got, want)

    @rule(who=PICK, least=st.integers(0, 2))
    def steal(self, who: int, least: int) -> None:
        me = self.ids[who]
        try:
            got = self.store.steal_task(me, RUN_NS, least)
        except NotRegisteredError:
            assert me not in self.alive
            return
        self._expire()
        victim = rules.steal_victim(me, self._counts(), least)
        want = None if victim is None else self._best((victim,))
        ok, miss = self.steals[me]
        if want is not None:
            assert victim is not None
            self.stolen_from[victim] = self.clock.now
            self._start(want, me)
            self.steals[me] = (ok + 1, miss)
        else:
            self.steals[me] = (ok, miss + 1)
        self._check(got, want)

    @rule(pick=st.integers(0, 50), stale=st.booleans(),
          outcome=st.sampled_from(rules.OUTCOMES), twice=st.booleans())
    def settle(self, pick: int, stale: bool, outcome: Any, twice: bool) -> None:
        if not self.names:
            return
        t = self.tasks[self.names[pick % len(self.names)]]
        fence = t.fence - 1 if stale else t.fence
        text = json.dumps([outcome, pick])
        got = self.store.settle_task(t.task_id, fence, outcome, text)
        if self._holds(t, fence):
            self._settled(t, outcome, text)
            self._check(got, t)
        else:
            assert got is None or (got.fence == fence and got.state != "running")
        if twice and got is not None:  # the same report sent again: the same answer
            assert self.store.settle_task(t.task_id, fence, outcome, text) == got

    @rule(pick=st.integers(0, 50), who=PICK, outcome=st.sampled_from(rules.OUTCOMES))
    def settle_then_take(self, pick: int, who: int, outcome: Any) -> None:
        running = [t for t in self.tasks.values() if self._holds(t, t.fence)]
        if not running:
            return
        t, me = running[pick % len(running)], self.ids[who]
        text = json.dumps(["then take", pick])
        try:
            got, nxt = self.store.settle_and_take(t.task_id, t.fence, outcome, text, me,
                                                  RUN_NS)
        except NotRegisteredError:
            assert me not in self.alive  # and nothing was done
            return
        assert me in self.alive
        self._settled(t, outcome, text)
        self._check(got, t)
        self._expire()
        want = self._best((me, ORPHANED))
        if want is not None:
            self._start(want, me)
        self._check(nxt, want)

    @rule(pick=st.integers(0, 50))
    def renew(self, pick: int) -> None:
        if not self.names:
            return
        t = self.tasks[self.names[pick % len(self.names)]]
        got = self.store.renew_task(t.task_id, t.fence, RUN_NS)
        if self._holds(t, t.fence):
            t.lease_until = self.clock.now + RUN_NS
            assert got is not None and got.lease_until_ns == t.lease_until
        else:
            assert got is None

    @rule(seconds=st.sampled_from([0.5, 1.5, 3.0]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        for name in self.alive:
            self.store.heartbeat(name)
            self.seen[name] = self.clock.now

    @rule(who=PICK)
    def kill(self, who: int) -> None:
        """The instance stops heartbeating; after its lease the reaper hands its tasks on."""
        name = self.ids[who]
        if name not in self.alive:
            return
        self.clock.advance(LEASE_S + 0.1)
        for other in self.alive - {name}:
            self.store.heartbeat(other)
        assert name in self.store.reap()
        self.alive.discard(name)
        self._hand_over(name)
        self._expire()

    @rule(who=PICK)
    def leave(self, who: int) -> None:
        name = self.ids[who]
        self.store.unregister_instance(name)
        if name in self.alive:
            self.alive.discard(name)
            self._hand_over(name)

    @rule(who=PICK)
    def come_back(self, who: int) -> None:
        name = self.ids[who]
        if name not in self.alive:
            self._register(name)

    def _hand_over(self, name: str) -> None:
        for t in sorted(self.tasks.values(), key=lambda t: t.seq):
            if t.owner == name and t.state == "running":
                self._lost(t, ORPHANED)
            elif t.owner == name and t.state == "queued":
                t.owner = ORPHANED

    # --- what always holds ----------------------------------------------------------------
    @invariant()
    def nothing_is_lost_and_the_counts_agree(self) -> None:
        if not hasattr(self, "store"):
            return
        counts = {c.instance_id: c for c in self.store.queue_counts()}
        for owner in {t.owner for t in self.tasks.values()} | set(counts):
            mine = [t for t in self.tasks.values() if t.owner == owner]
            c = counts.get(owner, OwnerCounts(owner))
            assert (c.queued, c.running) == (
                sum(t.state == "queued" for t in mine), sum(t.state == "running" for t in mine))
        for name, (ok, miss) in self.steals.items():
            s = counts.get(name, OwnerCounts(name)).stealing
            assert (s.successful_steals, s.failed_attempts) == (ok, miss)
        listed = {t.task_id: t for t in self.store.list_tasks(limit=1000)}
        assert set(listed) == set(self.tasks)  # none lost, none made up
        for t in self.tasks.values():
            self._check(listed[t.task_id], t)
        assert all(n <= 1 for n in self.settled_once.values())


def _settings(kind: str) -> settings:
    # the remote kind (a daemon per example, every step over HTTP) and the Redis scripts
    # (the functions' Lua, delivered as scripts) run fewer: the same decisions answer behind
    # them, which the SQLite and Redis runs cover in full
    examples = {"remote": 8, "redis-scripts": 8}.get(kind, 25)
    return settings(max_examples=examples, stateful_step_count=40, deadline=None)


for _kind in STORE_KINDS:
    _name = "".join(p.capitalize() for p in _kind.split("-"))
    _cls = type(f"{_name}QueueModel", (QueueModel,), {"kind": _kind})
    _cls.TestCase.settings = _settings(_kind)
    globals()[f"Test{_name}Queue"] = _cls.TestCase
