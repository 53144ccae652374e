"""Host facts: what this host says about its processes, behind one interface, two backends.

- ``linux``: ``/proc`` (start time in clock ticks since boot from ``/proc/PID/stat``), exact;
- ``portable``: psutil (a process's create time, as milliseconds since boot), for macOS and
  any system psutil knows.

A fact that cannot be read (psutil missing, access denied, a zombie, no ``/proc``) is
"unreadable", which judges nothing: a live owner never loses its permits or workflows because
its process could not be looked at. Evidence of two backends is never compared: the backend
is part of the process domain (``core.liveness.Domain``), so a record written by a process on
the other backend is judged by its lease alone. The clock and the boot identity are not
backend facts (``system``): every process on one host reads them the same way.

``PI_XI_HOST_FACTS`` picks the backend: ``auto`` (default: ``linux`` where ``/proc`` is
readable, else ``portable``), ``linux`` or ``portable`` (the CI runs the store suites on both).
"""

from __future__ import annotations

import os

from cross_instance.errors import ConfigError
from cross_instance.hostfacts import system
from cross_instance.hostfacts.base import ProcessFacts, UnreadableFact
from cross_instance.hostfacts.linux import LinuxFacts
from cross_instance.hostfacts.portable import PortableFacts

ENV = "PI_XI_HOST_FACTS"
CHOICES = ("auto", "linux", "portable")

__all__ = ["CHOICES", "ENV", "LinuxFacts", "PortableFacts", "ProcessFacts", "UnreadableFact",
           "select", "system"]


def select(value: str | None = None) -> ProcessFacts:
    """The backend named by ``value`` (default: the ``PI_XI_HOST_FACTS`` environment
    variable); a bad name, or ``linux`` where there is no ``/proc``, is a ``ConfigError``."""
    raw = os.environ.get(ENV, "") if value is None else value
    choice = raw.strip().lower() or "auto"
    if choice not in CHOICES:
        raise ConfigError(ENV, repr(raw), f"expected one of {', '.join(CHOICES)}")
    linux_here = LinuxFacts.available()
    if choice == "linux" and not linux_here:
        raise ConfigError(ENV, repr(raw), f"the linux backend reads /proc, which this system "
                          f"({system.platform()}) does not have; use auto or portable")
    if choice == "auto":
        choice = "linux" if linux_here else "portable"
    return LinuxFacts() if choice == "linux" else PortableFacts()
