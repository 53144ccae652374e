"""Portable backend: process create times from psutil (macOS, and Linux when forced).

The evidence is the create time as milliseconds since boot (``create_time() - boot_time()``,
read together). psutil derives both from the wall clock; their difference does not depend on
it on Linux, and on macOS moves only by wall-clock steps between two readers (psutil issue
2570). ``tolerance`` (10 s) absorbs such steps: a larger one can at worst make a reused pid
look alive until its lease runs out, or, stepped backwards by more than that while the owner
runs, make it look reused; a smaller difference never decides anything wrong. psutil missing,
access denied, a zombie: unreadable, never dead.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import ClassVar, cast

from cross_instance.hostfacts.base import ProcessFacts, UnreadableFact


@functools.cache
def _psutil() -> ModuleType | None:
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return None
    return cast(ModuleType, psutil)


def _pid_exists(pid: int, psutil: ModuleType) -> bool:
    """A second opinion before calling a pid gone. ``kill(pid, 0)`` on POSIX needs no
    ``/proc``; never on Windows, where ``os.kill`` terminates."""
    if os.name != "posix":
        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: someone else's process, but there
    return True


class PortableFacts(ProcessFacts):
    name: ClassVar[str] = "portable"
    tolerance: ClassVar[int] = 10_000  # ms

    def start_evidence(self, pid: int) -> int | None:
        psutil = _psutil()
        if psutil is None:
            raise UnreadableFact("psutil is not installed")
        try:
            boot = psutil.boot_time()
            proc = psutil.Process(pid)
            created = proc.create_time()
            if proc.status() == psutil.STATUS_ZOMBIE:
                raise UnreadableFact(f"process {pid} is a zombie")
        except psutil.ZombieProcess as err:
            raise UnreadableFact(f"process {pid} is a zombie") from err
        except psutil.NoSuchProcess:
            if _pid_exists(pid, psutil):
                raise UnreadableFact(f"psutil did not find process {pid}, which exists") from None
            return None
        except (psutil.Error, OSError) as err:  # AccessDenied, an unreadable source
            raise UnreadableFact(f"process {pid}: {err}") from err
        return max(1, round((float(created) - float(boot)) * 1000))
