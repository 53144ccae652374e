"""TTL locks with fencing tokens, as pure decisions (seed 001's ``DistributedLock``).

Promises every store keeps:

- At most one holder per resource at any store instant; a lock is free once released, once its
  TTL has passed, or once its holder instance is judged dead (on the same host that is as soon
  as the process is gone, before the TTL).
- Each grant of a resource gets a fencing token one above the previous grant of that resource,
  never reused: a resource that held token 7 will next hand out 8.
- Only the holder (the exact ``lock_id``) can renew or release; a forged or stale id changes
  nothing. A lock past its TTL cannot be renewed: it is lost, even if nobody took it yet.
- Any string names a resource (up to ``MAX_RESOURCE`` characters); names are stored as given,
  never mangled into file names, so two names never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

from cross_instance.core.liveness import Verdict
from cross_instance.errors import LockRequestError

MAX_RESOURCE = 1024
MIN_TTL_NS = 1_000_000  # 1 ms
MAX_TTL_NS = 86_400_000_000_000  # one day


@dataclass(frozen=True, slots=True)
class LockRecord:
    """A held lock (times on the store clock in ns, and wall-clock ms for people)."""

    resource: str
    lock_id: str
    holder: str  # instance id
    token: int  # fencing token
    acquired_ns: int
    expires_ns: int
    acquired_wall_ms: int
    expires_wall_ms: int

    @property
    def acquired_at(self) -> int:
        """Wall-clock ms, as in the seed's ``acquiredAt``."""
        return self.acquired_wall_ms

    @property
    def expires_at(self) -> int:
        """Wall-clock ms, as in the seed's ``expiresAt``."""
        return self.expires_wall_ms


@dataclass(frozen=True, slots=True)
class LockWaiting:
    """Not granted yet: ``ticket`` keeps the caller's place; ask again by ``retry_ns``."""

    ticket: int
    retry_ns: int  # when the current hold expires (now, when it is free but others are first)
    holder: str | None
    now_ns: int


def check_resource(resource: object) -> str:
    if not isinstance(resource, str) or not resource:
        raise LockRequestError(f"a lock resource must be a non-empty string, got {resource!r}")
    if len(resource) > MAX_RESOURCE:
        raise LockRequestError(
            f"lock resource is {len(resource)} characters; at most {MAX_RESOURCE} are allowed")
    if "\x00" in resource:
        raise LockRequestError("lock resource contains a NUL character")
    if any("\ud800" <= c <= "\udfff" for c in resource):
        raise LockRequestError("lock resource contains a lone surrogate (not Unicode text a "
                               "store can keep)")
    return resource


def check_ttl(ttl_s: object) -> int:
    """The TTL in ns, or a ``LockRequestError`` naming what is wrong with it."""
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or ttl_s != ttl_s:
        raise LockRequestError(f"lock ttl must be a number of seconds, got {ttl_s!r}")
    try:
        ttl_ns = int(ttl_s * 1e9)
    except OverflowError:  # infinite, or an integer beyond a float
        ttl_ns = MAX_TTL_NS + 1
    if not MIN_TTL_NS <= ttl_ns <= MAX_TTL_NS:
        raise LockRequestError(f"lock ttl must be between 0.001 s and 1 day, got {ttl_s!r} s")
    return ttl_ns


def why_free(record: LockRecord | None, now_ns: int, holder_verdict: Verdict | None) -> str:
    """Why the resource can be granted now ("" when it cannot: it is held)."""
    if record is None:
        return "free"
    if record.expires_ns <= now_ns:
        return "expired"
    if holder_verdict is Verdict.DEAD:
        return "holder dead"
    return ""


def my_turn(first_waiting: int | None, ticket: int | None) -> bool:
    """First come, first served: a free lock goes to a caller when nobody queues for it, or
    when the earliest queued wait is the caller's own (``ticket``)."""
    return first_waiting is None or (ticket is not None and first_waiting == ticket)


def next_token(last: int | None, floor: int) -> int:
    """The fencing token of a resource's next grant: one above its last, or (``last`` None:
    the resource never held a lock in this store) one above the store's ``floor``, so a
    store restarted or recovered never hands out a token an earlier grant had."""
    return (floor if last is None else last) + 1


def can_renew(record: LockRecord | None, lock_id: str, now_ns: int) -> bool:
    return record is not None and record.lock_id == lock_id and record.expires_ns > now_ns
