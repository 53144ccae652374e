"""Data the stores hold and return. Plain frozen dataclasses: no I/O, no behaviour.

Times named ``*_ns`` are on the store's clock (one host: boot time; Redis: the server's
``TIME``); times named ``*_wall_ms`` are wall-clock milliseconds, for people only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cross_instance.core.limiter import RateSpec
from cross_instance.core.liveness import Domain

#: The largest count a store is given (pending tasks, usage, ...): every store keeps it exactly
#: and gives it back (Redis's scripts hold numbers as doubles, exact to 2**53; a larger one
#: comes back as text no reader can parse).
MAX_COUNT = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Workload:
    """What an instance publishes about its queue (seed: updateWorkloadInfo)."""

    pending_tasks: int = 0
    avg_latency_ms: float | None = None
    active_orchestrations: int = 0


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    instance_id: str
    domain: Domain
    pid: int
    start_ticks: int
    session_id: str
    cwd: str
    started_wall_ms: int
    lease_ns: int
    priority: int = 1
    reserved: int = 0
    started_ns: int = 0
    heartbeat_ns: int = 0
    heartbeat_wall_ms: int = 0
    workload: Workload = field(default_factory=Workload)
    active_models: tuple[tuple[str, str, int], ...] = ()  # (provider, model, count)
    slots_in_use: int = 0


@dataclass(frozen=True, slots=True)
class PermitRequest:
    """A permit: tokens from each rate bucket and one slot in each concurrency group.

    ``rates`` are (bucket key, cost); ``slots`` are group keys; ``label`` is what logs show.
    """

    instance_id: str
    provider: str
    model: str | None
    rates: tuple[tuple[str, int], ...]
    slots: tuple[str, ...]
    tokens: int = 0
    reports: bool = False  # the caller reports outcomes: slow start applies to new buckets


@dataclass(frozen=True, slots=True)
class Granted:
    permit_id: int
    granted_ns: int
    usage: int  # requests admitted for the provider in the last minute (estimate), this one too
    limit: int  # the provider's requests per minute


@dataclass(frozen=True, slots=True)
class Waiting:
    ticket: int
    ready_ns: int  # the earliest instant the rate tokens could be had
    slot_blocked: bool
    ahead: int
    reason: str
    now_ns: int
    # the wait's place in the store's queue (a later wait has a larger one): the order in which
    # the store serves this process's waiters, which wait tickets (chosen at random) do not show
    place: int = 0


@dataclass(frozen=True, slots=True)
class BucketState:
    key: str
    spec: RateSpec
    tat_ns: int
    used_last_minute: int
    used_by_instance: dict[str, int]
    learned_rate: float | None = None  # adaptive control's rate, when it learned one
    cooldown_until_ns: int = 0
    reported_limit: int | None = None


@dataclass(frozen=True, slots=True)
class GroupState:
    key: str
    limit: int
    used: int


@dataclass(frozen=True, slots=True)
class PermitState:
    permit_id: int
    instance_id: str
    provider: str
    model: str | None
    tokens: int
    granted_ns: int


@dataclass(frozen=True, slots=True)
class Event:
    event_id: int
    wall_ms: int
    kind: str
    instance_id: str | None
    data: dict[str, object]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything ``pi-xi status`` and ``pi-xi limits`` show, read in one consistent step."""

    now_ns: int
    instances: tuple[InstanceRecord, ...]
    buckets: tuple[BucketState, ...]
    groups: tuple[GroupState, ...]
    permits: tuple[PermitState, ...]
    waiting: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a call made under a permit met, for adaptive control.

    ``reported`` holds (bucket key, limit per minute, remaining, ns until reset) for each
    bucket whose limit the response stated."""

    granted_ns: int
    rate_limited: bool
    retry_after_ns: int | None = None
    reported: tuple[tuple[str, int | None, int | None, int | None], ...] = ()


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A change to a bucket's learned state, for the adaptive controller's log."""

    key: str
    old_rate: float
    new_rate: float
    cooldown_until_ns: int
    reason: str
