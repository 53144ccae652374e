"""A model test of the ownership, lock and permit operations (FAULTS.md F24): random sequences
of claims, force-claims, releases, fenced writes, lock grants and waits, renewals, permits
(acquire, try, release, each sent twice as after a lost reply), clock moves, instance deaths
(lease or a killed process), restarts and reaps, on every store, checked step by step against
a plain model of the promises. Every name (instance id, workflow id, lock resource, provider,
model) is drawn from the whole range the API accepts, so no store may rely on a separator
or a character a name cannot hold (issue 14, item 4)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cross_instance.config.rules import instance_id_problem
from cross_instance.core.keys import PROVIDER_NAME
from cross_instance.core.limiter import RateSpec
from cross_instance.core.locking import MAX_RESOURCE, LockRecord, LockWaiting
from cross_instance.core.modelmatch import MAX_PATTERN_LENGTH, pattern_problem
from cross_instance.core.ownership import MAX_WORKFLOW_ID, Force, check_workflow_id
from cross_instance.core.records import Granted, PermitRequest, Waiting
from cross_instance.errors import CrossInstanceError, StaleEpochError
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.stores import open_store
from cross_instance.stores.permit_ids import new_ticket
from tests.conftest import STORE_KINDS, FakeClock, record

LEASE_S, TTL_NS = 5.0, 3_000_000_000
TOTAL, PER_PROVIDER, PER_MODEL = 3, 2, 1  # slot limits: "*", "p:<provider>", "m:<p>/<m>"
RATE = RateSpec(600_000, 10_000)  # never the limit here: slots are what is modelled


def _valid_workflow_id(text: str) -> bool:
    try:
        check_workflow_id(text)
    except CrossInstanceError:
        return False
    return True


# the API's accepted ranges, drawn from arbitrary text (the API refuses lone surrogates, which
# are not text a store can encode: tests/stores/test_names.py)
INSTANCE_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}", fullmatch=True).filter(
    lambda s: instance_id_problem(s) is None)
WORKFLOW_IDS = st.text(min_size=1, max_size=MAX_WORKFLOW_ID).filter(_valid_workflow_id)
RESOURCES = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                    min_size=1, max_size=MAX_RESOURCE)
PROVIDERS = st.from_regex(PROVIDER_NAME, fullmatch=True)
MODELS = st.text(min_size=1, max_size=MAX_PATTERN_LENGTH).filter(
    lambda s: pattern_problem(s) is None)
PICK = st.integers(0, 2)


class OwnershipModel(RuleBasedStateMachine):
    kind = "sqlite"

    @initialize(ids=st.lists(INSTANCE_IDS, min_size=3, max_size=3, unique=True),
                wfs=st.lists(WORKFLOW_IDS, min_size=2, max_size=2, unique=True),
                resources=st.lists(RESOURCES, min_size=2, max_size=2, unique=True),
                providers=st.lists(PROVIDERS, min_size=2, max_size=2, unique=True),
                models=st.lists(MODELS | st.sampled_from(["None", "a/b", "a b"]),
                                min_size=2, max_size=2, unique=True))
    def start(self, ids: list[str], wfs: list[str], resources: list[str],
              providers: list[str], models: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pi-xi-model-"))
        self.clock = FakeClock()
        url = (f"sqlite://{self.dir / 'state'}" if self.kind == "sqlite" else
               f"redis://127.0.0.1:6379/0?prefix=pi-model-{uuid.uuid4().hex[:12]}:"
               + ("&lua=scripts" if self.kind == "redis-scripts" else ""))
        self.store = open_store(url, clock=self.clock)
        if self.kind != "sqlite":
            assert self.store.declare_empty()  # a new prefix: no restart grace
        self.ids, self.wfs, self.resources = ids, wfs, resources
        # a model-less permit, two models of one provider (one of them maybe "None"), and
        # the same model text under another provider
        self.kinds: list[tuple[str, str | None]] = [
            (providers[0], None), (providers[0], models[0]), (providers[0], models[1]),
            (providers[1], models[0])]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.inc = dict.fromkeys(ids, 0)  # which process of the instance is registered
        self.registered: set[str] = set()
        self.killed: set[str] = set()
        self.seen: dict[str, int] = {}
        self.owner: dict[str, tuple[str, int] | None] = dict.fromkeys(wfs)  # (name, process)
        self.epoch = dict.fromkeys(wfs, 0)  # counted from the store's first epoch
        self.base: dict[str, int] = {}
        self.tokens: dict[tuple[str, str], int] = {}  # (instance, workflow) -> epoch handed
        self.lock: dict[str, tuple[str, str, int] | None] = dict.fromkeys(resources)
        self.lock_token = dict.fromkeys(resources, 0)
        self.lock_base: dict[str, int] = {}
        self.stale_ids: list[tuple[str, str]] = []
        self.released: set[str] = set()  # the lock ids whose release freed their lock
        self.permits: dict[int, tuple[str, tuple[str, str | None]]] = {}
        self.gone_permits: list[tuple[str, int]] = []
        for n in ids:
            self._register(n)

    def teardown(self) -> None:
        if not hasattr(self, "store"):
            return
        for proc in self.procs.values():
            proc.kill()
            proc.wait()
        if hasattr(self.store, "drop_everything"):
            self.store.drop_everything()
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- the instances: real processes, so a kill is seen at once on this host -------------
    def _register(self, name: str) -> None:
        old = self.procs.get(name)
        if old is not None:
            old.kill()
            old.wait()
        proc = subprocess.Popen(["sleep", "600"])
        ticks = hostinfo.start_ticks(proc.pid)
        assert ticks is not None
        self.procs[name] = proc
        self.store.register_instance(record(name, pid=proc.pid, start_ticks=ticks,
                                            lease_s=LEASE_S))
        self._forget(name)  # a dead record of the name was replaced, with all it held
        self.inc[name] += 1
        self.registered.add(name)
        self.killed.discard(name)
        self.seen[name] = self.clock.now
        rates = {f"r:{p}": RATE for p, _ in self.kinds}
        groups = {"*": TOTAL, **{f"p:{p}": PER_PROVIDER for p, _ in self.kinds},
                  **{f"m:{p}/{m}": PER_MODEL for p, m in self.kinds if m is not None}}
        self.store.publish_limits(name, rates, groups)

    def _forget(self, name: str) -> None:
        """The store removed the instance's record: its permits, locks and waits went."""
        self.registered.discard(name)
        for pid, (holder, _) in list(self.permits.items()):
            if holder == name:
                del self.permits[pid]
                self.gone_permits.append((name, pid))
        for res, held in self.lock.items():
            if held is not None and held[0] == name:
                self.stale_ids.append((res, held[1]))
                self.lock[res] = None

    def _dead(self, name: str) -> bool:
        return (name not in self.registered or name in self.killed
                or self.clock.now - self.seen[name] > LEASE_S * 1e9)

    def _owner_dead(self, owner: tuple[str, int]) -> bool:
        return owner[1] != self.inc[owner[0]] or self._dead(owner[0])

    # --- workflows ---------------------------------------------------------------------------
    @rule(who=PICK, wf=st.integers(0, 1), force=st.sampled_from(list(Force)))
    def claim(self, who: int, wf: int, force: Force) -> None:
        name, wid = self.ids[who], self.wfs[wf]
        if self._dead(name):
            return
        result = self.store.claim_workflow(wid, name, force=force)
        if wid not in self.base and result.after is not None:
            self.base[wid] = result.after.epoch - 1
        me, owner = (name, self.inc[name]), self.owner[wid]
        if owner == me:
            assert result.allowed and result.epoch - self.base[wid] == self.epoch[wid]
            return
        expect_move = owner is None or self._owner_dead(owner) or force is Force.LIVE
        assert result.allowed == expect_move, (result, owner)
        if expect_move:
            if owner is not None and self._owner_dead(owner) and owner[1] == self.inc[owner[0]] \
                    and owner[0] in self.registered:
                self._forget(owner[0])  # the claim reaped it
            self.epoch[wid] += 1
            self.owner[wid] = me
            self.tokens[(name, wid)] = self.epoch[wid]
        assert result.epoch - self.base.get(wid, 0) == self.epoch[wid]

    @rule(who=PICK, wf=st.integers(0, 1))
    def release(self, who: int, wf: int) -> None:
        name, wid = self.ids[who], self.wfs[wf]
        done = self.store.release_workflow(wid, name)
        owner = self.owner[wid]
        assert done == (owner is not None and owner[0] == name)
        if done:
            self.owner[wid] = None

    @rule(who=PICK, wf=st.integers(0, 1), value=st.integers())
    def write(self, who: int, wf: int, value: int) -> None:
        name, wid = self.ids[who], self.wfs[wf]
        epoch = self.tokens.get((name, wid), 0) + self.base.get(wid, 0)
        owner = self.owner[wid]
        mine = owner is not None and owner[0] == name and \
            epoch - self.base.get(wid, 0) == self.epoch[wid]
        try:
            self.store.write_workflow_state(wid, name, epoch, {wid: value})
            assert mine
            assert self.store.read_workflow_state(wid)[wid] == value
        except StaleEpochError:
            assert not mine

    # --- locks -------------------------------------------------------------------------------
    def _lock_free(self, res: str) -> bool:
        held = self.lock[res]
        return held is None or held[2] <= self.clock.now or self._dead(held[0])

    def _granted_lock(self, res: str, name: str, got: LockRecord) -> None:
        assert got.resource == res and got.holder == name
        held = self.lock[res]
        if held is not None:
            self.stale_ids.append((res, held[1]))
        self.lock_token[res] += 1
        if res not in self.lock_base:
            self.lock_base[res] = got.token - 1
        assert got.token - self.lock_base[res] == self.lock_token[res]
        self.lock[res] = (name, got.lock_id, got.expires_ns)

    @rule(who=PICK, r=st.integers(0, 1))
    def take_lock(self, who: int, r: int) -> None:
        name, res = self.ids[who], self.resources[r]
        if self._dead(name):
            return
        got = self.store.acquire_lock(res, name, TTL_NS, None, False)
        assert (got is not None) == self._lock_free(res)
        if isinstance(got, LockRecord):
            self._granted_lock(res, name, got)

    @rule(who=PICK, r=st.integers(0, 1))
    def wait_for_lock_sent_twice(self, who: int, r: int) -> None:
        name, res = self.ids[who], self.resources[r]
        if self._dead(name):
            return
        ticket = new_ticket()
        first = self.store.acquire_lock(res, name, TTL_NS, ticket, True)
        again = self.store.acquire_lock(res, name, TTL_NS, ticket, True)  # its reply lost
        if isinstance(first, LockRecord):
            assert self._lock_free(res) and again == first
            self._granted_lock(res, name, first)
        else:
            assert isinstance(first, LockWaiting) and isinstance(again, LockWaiting)
            assert not self._lock_free(res) and first.ticket == again.ticket == ticket
            self.store.cancel_lock_wait(ticket)

    @rule()
    def renew_or_release_stale(self) -> None:
        for res, lock_id in self.stale_ids[-3:]:
            assert self.store.renew_lock(res, lock_id, TTL_NS) is None
            # only a release that freed its lock, sent again, is answered True again (also once
            # another holds the lock)
            assert self.store.release_lock(res, lock_id) == (lock_id in self.released)

    @rule(r=st.integers(0, 1))
    def release_lock(self, r: int) -> None:
        res = self.resources[r]
        held = self.lock[res]
        if held is not None:
            assert self.store.release_lock(res, held[1])
            self.stale_ids.append((res, held[1]))
            self.lock[res] = None
            self.released.add(held[1])

    @rule()
    def cleanup_locks(self) -> None:
        expected = {res for res, held in self.lock.items()
                    if held is not None and self._lock_free(res)}
        freed = self.store.cleanup_expired_locks()
        assert {x.resource for x in freed} == expected
        for res in expected:
            held = self.lock[res]
            assert held is not None
            self.stale_ids.append((res, held[1]))
            self.lock[res] = None

    # --- permits -----------------------------------------------------------------------------
    def _request(self, name: str, k: int) -> PermitRequest:
        p, m = self.kinds[k]
        slots = ("*", f"p:{p}") + (() if m is None else (f"m:{p}/{m}",))
        return PermitRequest(name, p, m, ((f"r:{p}", 1),), slots)

    def _fits(self, k: int) -> bool:
        p, m = self.kinds[k]
        held = [kind for _, kind in self.permits.values()]
        return (len(held) < TOTAL and sum(1 for q, _ in held if q == p) < PER_PROVIDER
                and (m is None or held.count((p, m)) < PER_MODEL))

    @rule(who=PICK, k=st.integers(0, 3), chosen=st.booleans())
    def acquire_permit_sent_twice(self, who: int, k: int, chosen: bool) -> None:
        name = self.ids[who]
        if name not in self.registered:
            return
        ticket = new_ticket() if chosen else None
        request = self._request(name, k)
        fits = self._fits(k)
        first = self.store.acquire(request, ticket)
        assert isinstance(first, Granted) == fits, (first, self.permits)
        again = self.store.acquire(request, first.permit_id if fits else first.ticket)
        if isinstance(first, Granted):
            assert isinstance(again, Granted) and again.permit_id == first.permit_id
            assert ticket is None or first.permit_id == ticket
            self.permits[first.permit_id] = (name, self.kinds[k])
        else:
            assert isinstance(first, Waiting) and isinstance(again, Waiting)
            assert again.ticket == first.ticket and (ticket is None or first.ticket == ticket)
            assert first.slot_blocked
            self.store.cancel_wait(first.ticket)

    @rule(who=PICK, k=st.integers(0, 3))
    def try_permit(self, who: int, k: int) -> None:
        name = self.ids[who]
        if name not in self.registered:
            return
        fits = self._fits(k)
        got = self.store.try_acquire(self._request(name, k))
        assert (got is not None) == fits
        if got is not None:
            self.permits[got.permit_id] = (name, self.kinds[k])

    @rule(pick=st.integers(0, 7))
    def release_permit(self, pick: int) -> None:
        held = [(name, pid) for pid, (name, _) in sorted(self.permits.items())]
        choices = held + self.gone_permits[-3:]
        if not choices:
            return
        name, pid = choices[pick % len(choices)]
        assert self.store.release(name, [pid]) == (1 if pid in self.permits else 0)
        if pid in self.permits:
            del self.permits[pid]
            self.gone_permits.append((name, pid))

    # --- time, liveness ----------------------------------------------------------------------
    @rule(seconds=st.sampled_from([0.5, 2.0, 4.0, 6.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(who=PICK)
    def heartbeat(self, who: int) -> None:
        name = self.ids[who]
        if name in self.killed:
            return
        assert self.store.heartbeat(name) == (name in self.registered)
        if name in self.registered:
            self.seen[name] = self.clock.now

    @rule(who=PICK)
    def kill_instance(self, who: int) -> None:
        name = self.ids[who]
        proc = self.procs[name]
        proc.kill()
        proc.wait()  # gone from /proc: judged dead at once on this host
        self.killed.add(name)

    @rule(who=PICK)
    def restart_instance(self, who: int) -> None:
        name = self.ids[who]
        if self._dead(name):  # a live one would be refused as a duplicate
            self._register(name)

    @rule()
    def reap(self) -> None:
        expected = {n for n in self.registered if self._dead(n)}
        assert set(self.store.reap()) == expected
        for name in expected:
            self._forget(name)

    @invariant()
    def store_agrees(self) -> None:
        if not hasattr(self, "store"):
            return
        for wid in self.wfs:
            wf = self.store.get_workflow(wid)
            assert (wf.epoch - self.base.get(wid, 0) if wf else 0) == self.epoch[wid]
            owner = self.owner[wid]
            assert (wf.owner.instance_id if wf and wf.owner else None) == \
                (owner[0] if owner else None)
        assert sorted((x.resource, x.lock_id) for x in self.store.list_locks()) == \
            sorted((res, held[1]) for res, held in self.lock.items() if held is not None)
        snap = self.store.snapshot()
        assert {p.permit_id: (p.instance_id, (p.provider, p.model)) for p in snap.permits} == \
            self.permits
        assert snap.waiting == 0  # every wait was cancelled: nothing left behind


def _settings(**extra: Any) -> settings:
    return settings(max_examples=60, stateful_step_count=30, deadline=None, **extra)


for _kind in STORE_KINDS:
    _name = _kind.title().replace("-", "")
    _cls = type(f"Test{_name}OwnershipModel", (OwnershipModel,), {"kind": _kind})
    _cls.TestCase.settings = _settings()
    globals()[f"Test{_name}Ownership"] = _cls.TestCase
