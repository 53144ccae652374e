"""A model test of the ownership and lock operations (FAULTS.md F24): random sequences of
claims, force-claims, releases, fenced writes, lock grants, renewals, clock moves and instance
deaths, on every store, checked step by step against a plain model of the promises."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cross_instance.core.ownership import Force
from cross_instance.errors import StaleEpochError
from cross_instance.stores import open_store
from tests.conftest import STORE_KINDS, FakeClock, record

NAMES = ["a", "b", "c"]
LEASE_S, TTL_NS = 5.0, 3_000_000_000


class OwnershipModel(RuleBasedStateMachine):
    kind = "sqlite"

    @initialize()
    def start(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pi-xi-model-"))
        self.clock = FakeClock()
        url = (f"sqlite://{self.dir / 'state'}" if self.kind == "sqlite" else
               f"redis://127.0.0.1:6379/0?prefix=pi-model-{uuid.uuid4().hex[:12]}:")
        self.store = open_store(url, clock=self.clock)
        if self.kind != "sqlite":
            assert self.store.declare_empty()  # a new prefix: no restart grace
        self.alive = set(NAMES)
        self.seen = {n: self.clock.now for n in NAMES}
        for n in NAMES:
            self.store.register_instance(record(n, lease_s=LEASE_S))
        self.owner: str | None = None
        self.epoch = 0  # counted from the store's first epoch (1 on SQLite, a floor on Redis)
        self.base: int | None = None
        self.lock_base: int | None = None
        self.tokens: dict[str, int] = {}  # instance -> the epoch it was handed
        self.lock: tuple[str, str, int] | None = None  # holder, lock id, expiry
        self.lock_token = 0
        self.stale_ids: list[str] = []

    def teardown(self) -> None:
        if hasattr(self.store, "drop_everything"):
            self.store.drop_everything()
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _dead(self, name: str) -> bool:
        return name not in self.alive or self.clock.now - self.seen[name] > LEASE_S * 1e9

    @rule(who=st.sampled_from(NAMES), force=st.sampled_from(list(Force)))
    def claim(self, who: str, force: Force) -> None:
        if self._dead(who):
            return
        result = self.store.claim_workflow("wf", who, force=force)
        if self.base is None and result.after is not None:
            self.base = result.after.epoch - 1
        if self.owner is None or self._dead(self.owner) or force is Force.LIVE:
            expect_move = self.owner != who
        else:
            expect_move = False
        if self.owner == who:
            assert result.allowed and result.epoch - (self.base or 0) == self.epoch
            return
        assert result.allowed == expect_move
        if expect_move:
            if self.owner is not None and self._dead(self.owner):
                self.alive.discard(self.owner)  # the claim reaped it
            self.epoch += 1
            self.owner = who
            self.tokens[who] = self.epoch
        assert result.epoch - (self.base or 0) == self.epoch

    @rule(who=st.sampled_from(NAMES))
    def release(self, who: str) -> None:
        done = self.store.release_workflow("wf", who)
        assert done == (self.owner == who)
        if done:
            self.owner = None

    @rule(who=st.sampled_from(NAMES), value=st.integers())
    def write(self, who: str, value: int) -> None:
        epoch = self.tokens.get(who, 0) + (self.base or 0)
        try:
            self.store.write_workflow_state("wf", who, epoch, {"v": value})
            assert self.owner == who and epoch - (self.base or 0) == self.epoch
            self.written = value
        except StaleEpochError:
            assert not (self.owner == who and epoch - (self.base or 0) == self.epoch)

    @rule(who=st.sampled_from(NAMES))
    def take_lock(self, who: str) -> None:
        if self._dead(who):
            return
        got = self.store.acquire_lock("res", who, TTL_NS, None, False)
        free = (self.lock is None or self.lock[2] <= self.clock.now
                or self._dead(self.lock[0]) or self.lock[0] not in self.alive)
        assert (got is not None) == free
        if got is not None:
            if self.lock is not None:
                self.stale_ids.append(self.lock[1])
            self.lock_token += 1
            if self.lock_base is None:
                self.lock_base = got.token - 1
            assert got.token - self.lock_base == self.lock_token
            self.lock = (who, got.lock_id, got.expires_ns)

    @rule()
    def renew_or_release_stale(self) -> None:
        for lock_id in self.stale_ids[-3:]:
            assert self.store.renew_lock("res", lock_id, TTL_NS) is None
            assert not self.store.release_lock("res", lock_id)

    @rule()
    def release_lock(self) -> None:
        if self.lock is not None:
            expected = self.lock[1] == self.store_lock_id()
            assert self.store.release_lock("res", self.lock[1]) == expected
            self.stale_ids.append(self.lock[1])
            self.lock = None

    def store_lock_id(self) -> str | None:
        held = self.store.list_locks()
        return held[0].lock_id if held else None

    @rule(seconds=st.sampled_from([0.5, 2.0, 4.0, 6.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(who=st.sampled_from(NAMES))
    def heartbeat(self, who: str) -> None:
        if who in self.alive and self.store.heartbeat(who):
            self.seen[who] = self.clock.now

    @invariant()
    def store_agrees(self) -> None:
        if not hasattr(self, "store"):
            return
        wf = self.store.get_workflow("wf")
        assert (wf.epoch - (self.base or 0) if wf else 0) == self.epoch
        assert (wf.owner.instance_id if wf and wf.owner else None) == self.owner


for _kind in STORE_KINDS:
    _cls = type(f"Test{_kind.title()}OwnershipModel", (OwnershipModel,), {"kind": _kind})
    _cls.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
    globals()[f"Test{_kind.title()}Ownership"] = _cls.TestCase
