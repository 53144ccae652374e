"""The interface every host-facts backend offers: a process's start evidence, and the probe
built on it (once, here, for every backend)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from cross_instance.core.liveness import Probe, match_start


class UnreadableFact(OSError):
    """A fact this host would not tell (no permission, no psutil, a zombie...): unknown."""


class ProcessFacts(ABC):
    """Start evidence of processes: an integer that grows with the start time, counted from
    boot, in a unit of the backend's own (never compared across backends); 0 = unknown."""

    name: ClassVar[str]
    tolerance: ClassVar[int]  # measurement error, in the evidence's unit

    @abstractmethod
    def start_evidence(self, pid: int) -> int | None:
        """The evidence of the process ``pid`` now, or None when there is certainly no such
        process. Raises ``UnreadableFact`` when it cannot be told."""

    def probe(self, pid: int, expected: int) -> Probe:
        """Is ``pid`` the process that recorded ``expected``?"""
        if expected <= 0 or pid <= 0:
            return Probe.UNREADABLE
        try:
            seen = self.start_evidence(pid)
        except (UnreadableFact, OSError, ValueError, IndexError):
            return Probe.UNREADABLE
        return match_start(expected, seen, self.tolerance)

    def own_evidence(self, pid: int) -> int:
        """This process's evidence, 0 when it cannot be read (then nobody can judge it by
        its pid, only by its lease)."""
        try:
            return self.start_evidence(pid) or 0
        except (UnreadableFact, OSError, ValueError, IndexError):
            return 0
