"""Linux backend: start times from ``/proc/PID/stat`` (field 22, clock ticks since boot).

Exact and cheap; the evidence is the kernel's own, so the tolerance is zero. A missing
``/proc/PID`` means no such process only while ``/proc`` itself is there.
"""

from __future__ import annotations

import os
from typing import ClassVar

from cross_instance.hostfacts.base import ProcessFacts, UnreadableFact


class LinuxFacts(ProcessFacts):
    name: ClassVar[str] = "linux"
    tolerance: ClassVar[int] = 0

    @staticmethod
    def available() -> bool:
        return os.access("/proc/self/stat", os.R_OK)

    def start_evidence(self, pid: int) -> int | None:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except (FileNotFoundError, ProcessLookupError):
            if not self.available():
                raise UnreadableFact("/proc is not readable") from None
            return None
        except OSError as err:
            raise UnreadableFact(f"/proc/{pid}/stat: {err.strerror}") from err
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        rest = data[data.rindex(b")") + 2 :].split()
        if rest[0] == b"Z":
            raise UnreadableFact(f"process {pid} is a zombie")
        return int(rest[19])
