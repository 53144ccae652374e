"""Is an instance alive? A pure verdict from its record and what a process probe saw.

Alive = a fresh heartbeat (the lease) and, when the record is from this process domain (same
boot and pid namespace), its pid running with the same start time. A reused pid is not life; a
probe that could not read the process says nothing ("unknown"), it never makes an instance dead.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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


@dataclass(frozen=True, slots=True)
class Domain:
    """Where pids mean the same thing: one host boot and one pid namespace."""

    host: str
    boot_id: str
    pid_ns: str

    def same_host_other_boot(self, other: Domain) -> bool:
        return self.host == other.host and self.boot_id != other.boot_id


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
