"""Is an instance alive? A pure verdict from its record and what a process probe saw.

Alive = a fresh heartbeat (the lease) and, when the record is from this process domain (same
boot, pid namespace and host-facts backend), its pid running with the same start time. A reused
pid is not life; a probe that could not read the process says nothing ("unknown"), it never
makes an instance dead. Start evidence is only compared within one domain: the backends measure
start times in different units, so a record from another backend is judged by its lease alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

UNKNOWN_BOOT = "unknown-boot"  # the boot id where the system tells none


class Probe(enum.Enum):
    """What looking at a pid on this host showed."""

    SAME = "same"  # running, same start time
    MISSING = "missing"  # no such process
    REUSED = "reused"  # running, but another start time: not the recorded process
    UNREADABLE = "unreadable"  # could not tell


class Verdict(enum.Enum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"  # lease fresh, process could not be checked

    @property
    def is_dead(self) -> bool:
        return self is Verdict.DEAD


def match_start(expected: int, seen: int | None, tolerance: int) -> Probe:
    """What a pid's start evidence ``seen`` (None: no such pid) says about the process that
    recorded ``expected`` (0: it could not read its own; then nothing can be told).

    Evidence counts up from boot, so a later start at the pid is another process (pids are
    unique among live processes: one that started before the recorded one and still runs
    would have held the pid when the recorded one got it). An earlier start contradicts the
    record, so it says nothing. ``tolerance`` absorbs a backend's measurement error.
    """
    if expected <= 0:
        return Probe.UNREADABLE
    if seen is None:
        return Probe.MISSING
    if abs(seen - expected) <= tolerance:
        return Probe.SAME
    return Probe.REUSED if seen > expected else Probe.UNREADABLE


@dataclass(frozen=True, slots=True)
class Domain:
    """Where pids and their start evidence mean the same thing: one host boot, one pid
    namespace, one host-facts backend (named in ``pid_ns``, e.g. ``linux:pid:[4026531836]``)."""

    host: str
    boot_id: str
    pid_ns: str

    def same_host_other_boot(self, other: Domain) -> bool:
        """Recorded before this host rebooted (never said when either boot is unknown)."""
        return (self.host == other.host and self.boot_id != other.boot_id
                and UNKNOWN_BOOT not in (self.boot_id, other.boot_id))


def judge(
    *,
    heartbeat_age_ns: int,
    lease_ns: int,
    record: Domain,
    local: Domain,
    probe: Probe | None,
) -> Verdict:
    """Verdict for a record whose last heartbeat is ``heartbeat_age_ns`` old.

    ``probe`` is the pid probe result, needed only when ``record == local``.
    """
    if heartbeat_age_ns > lease_ns:
        return Verdict.DEAD
    if record == local:
        if probe in (Probe.MISSING, Probe.REUSED):
            return Verdict.DEAD
        if probe is Probe.SAME:
            return Verdict.ALIVE
        return Verdict.UNKNOWN
    if local.same_host_other_boot(record):
        return Verdict.DEAD  # recorded before this host rebooted
    return Verdict.ALIVE
