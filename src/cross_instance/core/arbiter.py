"""Who may take capacity now: first come, first served across every process.

A permit request needs rate tokens in some buckets and one slot in some concurrency groups.
Requests that could not be granted wait in one queue with a ticket. ``arbitrate`` decides for
one request by walking the waiters ahead of it in queue order, giving each (on paper) what it
would take, and then checking what is left:

- a waiter that is ready (tokens and slots available) takes both;
- a waiter held only by slots reserves its rate tokens and blocks the slot groups it is short of;
- a waiter held by rate tokens blocks those buckets and reserves the tokens of its other buckets,
  but holds no slot (it could not use one yet).

So nobody overtakes an earlier waiter on a resource both need, and nobody waits for a resource
that no earlier waiter is short of. Queue order is (share class, ticket): an instance using fewer
global slots than its share (priority-weighted) goes ahead of instances at or above theirs, which
is how priorities and fair shares act without starving anyone.

Global slots also honour reservations: instance ``i`` may hold a slot iff, afterwards,
``sum_j max(used_j, reserved_j) <= total``; an instance below its reservation always may, even
past earlier waiters (none of them could have had that slot).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cross_instance.core import limiter
from cross_instance.core.limiter import RateSpec

GLOBAL_GROUP = "*"


@dataclass(frozen=True, slots=True)
class Need:
    """One request: ``rates`` are (bucket key, cost); ``slots`` are concurrency group keys."""

    instance_id: str
    rates: tuple[tuple[str, int], ...]
    slots: tuple[str, ...]
    ticket: int | None = None


@dataclass(frozen=True, slots=True)
class Holder:
    """An instance's global slots in use, its reservation and its fair share."""

    used: int
    reserved: int
    share: int


@dataclass(frozen=True, slots=True)
class Capacity:
    """The store's state for one decision (bucket TATs and specs, group usage, holders).

    ``holders`` may leave out instances that reserve nothing when nobody is queued: their
    slots still count through ``group_used``."""

    tats: Mapping[str, int]
    specs: Mapping[str, RateSpec]
    group_used: Mapping[str, int]
    group_limit: Mapping[str, int]
    holders: Mapping[str, Holder]


@dataclass(frozen=True, slots=True)
class Verdict:
    """``grant``; otherwise ``ready_at`` (ns) is when the rate tokens could be had at the
    earliest, ``slot_blocked`` says a concurrency slot is the obstacle, ``ahead`` counts the
    waiters in front."""

    grant: bool
    ready_at: int
    slot_blocked: bool
    ahead: int
    reason: str = ""


def impossible(need: Need, specs: Mapping[str, RateSpec]) -> str | None:
    """Why ``need`` can never be granted (a cost above a bucket's burst), else None."""
    for key, cost in need.rates:
        spec = specs.get(key)
        if spec is not None and cost > spec.burst:
            return f"{cost} tokens requested from {key} but its burst is {spec.burst}"
    return None


class _Ledger:
    """Mutable copy of capacity, used to hand out resources on paper."""

    def __init__(self, cap: Capacity, now: int) -> None:
        self.cap = cap
        self.now = now
        self.tats = dict(cap.tats)
        self.used = dict(cap.group_used)
        self.held = {k: h.used for k, h in cap.holders.items()}
        self.blocked_rates: set[str] = set()
        self.blocked_slots: set[str] = set()
        # Slots counted as taken for the reservation rule: sum of max(used, reserved) over the
        # listed holders, plus the slots of holders not listed (they reserve nothing).
        listed = sum(h.used for h in cap.holders.values())
        self.reserved_excess = (sum(max(h.used, h.reserved) for h in cap.holders.values())
                                + max(0, cap.group_used.get(GLOBAL_GROUP, 0) - listed))

    def rate_ok(self, key: str, cost: int) -> bool:
        spec = self.cap.specs.get(key)
        if spec is None:
            return True
        return key not in self.blocked_rates and limiter.admits(
            self.tats.get(key, 0), self.now, spec, cost
        )

    def slot_ok(self, group: str, instance_id: str) -> bool:
        limit = self.cap.group_limit.get(group)
        if limit is None:
            return group not in self.blocked_slots
        if self.used.get(group, 0) + 1 > limit:
            return False
        if group != GLOBAL_GROUP:
            return group not in self.blocked_slots
        holder = self.cap.holders.get(instance_id)
        used = self.held.get(instance_id, 0)
        reserved = holder.reserved if holder else 0
        if used < reserved:
            return True  # its reserved slot: no waiter ahead could have taken it
        return group not in self.blocked_slots and self.reserved_excess + 1 <= limit

    def take_rates(self, need: Need) -> None:
        for key, cost in need.rates:
            spec = self.cap.specs.get(key)
            if spec is not None:
                self.tats[key] = limiter.consume(self.tats.get(key, 0), self.now, spec, cost)

    def take_slots(self, need: Need) -> None:
        for group in need.slots:
            self.used[group] = self.used.get(group, 0) + 1
            if group == GLOBAL_GROUP:
                holder = self.cap.holders.get(need.instance_id)
                before = self.held.get(need.instance_id, 0)
                reserved = holder.reserved if holder else 0
                if before >= reserved:
                    self.reserved_excess += 1
                self.held[need.instance_id] = before + 1

    def ready_at(self, need: Need) -> int:
        at = self.now
        for key, cost in need.rates:
            spec = self.cap.specs.get(key)
            if spec is not None:
                at = max(at, limiter.ready_at(self.tats.get(key, 0), self.now, spec, cost))
        return at

    def visit(self, need: Need) -> tuple[bool, bool, int]:
        """Classify ``need`` and apply its effect on paper: (rates ok, slots ok, ready_at)."""
        rates_ok = all(self.rate_ok(k, c) for k, c in need.rates)
        slots_ok = all(self.slot_ok(g, need.instance_id) for g in need.slots)
        at = self.ready_at(need) if not rates_ok else self.now
        if rates_ok and slots_ok:
            self.take_rates(need)
            self.take_slots(need)
        elif rates_ok:
            self.take_rates(need)
            self.blocked_slots.update(
                g for g in need.slots if not self.slot_ok(g, need.instance_id)
            )
        else:
            short = [k for k, c in need.rates if not self.rate_ok(k, c)]
            self.take_rates(need)
            self.blocked_rates.update(short)
        return rates_ok, slots_ok, at


def fits_now(rates: Sequence[tuple[int, RateSpec, int]], groups: Sequence[tuple[int, int | None]],
             now: int) -> bool:
    """The decision when nobody is queued and nothing is reserved: every bucket admits its
    cost (``rates``: tat, spec, cost) and every group has a free slot (``groups``: used,
    limit or None). Equal to ``arbitrate`` in that case, cheaper; pinned by a property test."""
    for used, limit in groups:
        if limit is not None and used + 1 > limit:
            return False
    return all(limiter.admits(tat, now, spec, cost) for tat, spec, cost in rates)


def queue_key(need: Need, holders: Mapping[str, Holder]) -> tuple[int, int]:
    """Queue order: instances below their share first, then by ticket (new requests last)."""
    holder = holders.get(need.instance_id)
    over = 1 if holder is None or holder.used >= holder.share else 0
    return (over, need.ticket if need.ticket is not None else 1 << 62)


def arbitrate(me: Need, waiters: Sequence[Need], cap: Capacity, now: int) -> Verdict:
    """Decide ``me`` against the ``waiters`` queued (``me`` may be among them by ticket)."""
    ledger = _Ledger(cap, now)
    ahead = 0
    if waiters:
        mine = queue_key(me, cap.holders)
        keyed = sorted([(queue_key(w, cap.holders), i) for i, w in enumerate(waiters)])
        for key, i in keyed:  # (key, index): a total order, and Needs are never compared
            w = waiters[i]
            if me.ticket is not None and w.ticket == me.ticket:
                continue
            if key >= mine:
                break
            ledger.visit(w)
            ahead += 1
    rates_ok, slots_ok, at = ledger.visit(me)
    if rates_ok and slots_ok:
        return Verdict(True, now, False, ahead)
    reason = "waiting for a concurrency slot" if rates_ok else "waiting for rate tokens"
    return Verdict(False, at, rates_ok and not slots_ok, ahead, reason)
