"""Facts of this host that every process on it reads the same way, whichever process-facts
backend it uses: the store clock, the boot identity, the pid namespace, the host name.

Why they are not per backend: processes sharing one SQLite database must agree on its clock
(a lease written on one clock means nothing on another) and on which boot the stored times
belong to (a process that saw "another boot" would erase the live instances' state). So the
clock and the boot identity are chosen per operating system, never per backend:

- Linux: ``CLOCK_BOOTTIME``, and ``/proc/sys/kernel/random/boot_id``;
- macOS: ``CLOCK_MONOTONIC``, and the ``kern.bootsessionuuid`` sysctl.

Both clocks start at boot, are the same for every process of the boot, never jump with the
wall clock and keep counting while the machine sleeps, so a lease or a rate window means the
same to every instance and time spent asleep counts as time (a provider's window passes while
the lid is shut). On macOS ``CLOCK_UPTIME_RAW`` stops during sleep and ``CLOCK_MONOTONIC_RAW``
is documented as not to be compared with other clocks; ``CLOCK_MONOTONIC`` is the one that
counts like ``CLOCK_BOOTTIME``. ``psutil.boot_time()`` is no boot identity: it is derived from
the wall clock and moves when the clock is set (psutil issues 2541 and 2570); it is used only
when the operating system offers nothing better.

Windows has no ``clock_gettime`` and no ``flock``: the embedded store refuses there with a
clear error (``require_posix_locks``); the Redis store keeps time on the server.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import time
from collections.abc import Callable
from types import ModuleType

from cross_instance.core.liveness import UNKNOWN_BOOT
from cross_instance.errors import UnsupportedPlatform


def platform() -> str:
    """``sys.platform``, read when asked (tests simulate another operating system)."""
    return sys.platform

WINDOWS_ADVICE = (
    "the embedded SQLite store needs POSIX file locks (fcntl.flock) and a boot-relative "
    "clock, which native Windows lacks: run the agents under WSL (a Linux, fully supported), "
    "or point every instance at a Redis store (PI_STORE_URL=redis://host:6379/0), which keeps "
    "time on the server and needs neither"
)


@functools.cache
def _clock() -> tuple[str, int]:
    system = platform()
    if system.startswith("linux"):
        name = "CLOCK_BOOTTIME"
    elif system == "win32" or not hasattr(time, "clock_gettime"):
        raise UnsupportedPlatform(f"{system}: {WINDOWS_ADVICE}")
    else:
        name = "CLOCK_MONOTONIC"  # macOS (and other POSIX systems): counts through sleep
    clock_id = getattr(time, name, None)
    if not isinstance(clock_id, int):
        raise UnsupportedPlatform(
            f"{system}: this Python has no time.{name}, the clock the embedded store keeps "
            f"time on here; use the Redis store")
    return f"{system.rstrip('0123456789')}:{name}", clock_id


def clock_name() -> str:
    """The host clock, named with its operating system (``linux:CLOCK_BOOTTIME``): the SQLite
    database records it, and a process on another clock refuses to share the database."""
    return _clock()[0]


def clock_ns() -> int:
    """Nanoseconds on the host clock: since boot, sleep included, the same in every process
    of this boot. Raises ``UnsupportedPlatform`` where there is none (Windows)."""
    return time.clock_gettime_ns(_clock()[1])


def _linux_boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _darwin_boot_id() -> str | None:
    """``kern.bootsessionuuid``: a new UUID at every boot of a Mac."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        sysctlbyname = libc.sysctlbyname
        sysctlbyname.argtypes = [ctypes.c_char_p, ctypes.c_void_p,
                                 ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
                                 ctypes.c_size_t]
        sysctlbyname.restype = ctypes.c_int
        buf = ctypes.create_string_buffer(128)
        size = ctypes.c_size_t(len(buf))
        if sysctlbyname(b"kern.bootsessionuuid", buf, ctypes.byref(size), None, 0) != 0:
            return None
        return buf.value.decode("ascii", "replace").strip() or None
    except (OSError, AttributeError, ValueError):
        return None


def _psutil_boot_id() -> str | None:
    try:
        import psutil  # type: ignore[import-untyped]

        return f"boottime-{int(psutil.boot_time())}"
    except Exception:  # noqa: BLE001 - missing psutil or an unreadable fact: no identity
        return None


BOOT_ID_SOURCES: dict[str, tuple[Callable[[], str | None], ...]] = {
    "linux": (_linux_boot_id, _psutil_boot_id),
    "darwin": (_darwin_boot_id, _psutil_boot_id),
}


@functools.cache
def boot_id() -> str:
    """This boot's identity, the same for every process of it; ``unknown-boot`` when nothing
    tells (then no record is judged to be from another boot)."""
    key = "linux" if platform().startswith("linux") else platform()
    for source in BOOT_ID_SOURCES.get(key, (_psutil_boot_id,)):
        found = source()
        if found:
            return found
    return UNKNOWN_BOOT


@functools.cache
def pid_namespace() -> str:
    """The pid namespace (Linux containers); systems without namespaces have one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "pid:[default]"


@functools.cache
def hostname() -> str:
    """This host's name, or ``PI_XI_HOSTNAME`` where set: a process that should look like it
    runs on another host (tests of what crosses hosts; its liveness is then judged by its
    lease alone, and doorbells of this host do not reach it)."""
    return os.environ.get("PI_XI_HOSTNAME") or socket.gethostname()


def require_posix_locks() -> ModuleType:
    """``fcntl``, which the embedded store locks its files with, or ``UnsupportedPlatform``
    saying what works instead (imported here, lazily, so the rest of the package, and the
    Redis store, import on systems without it)."""
    try:
        import fcntl
    except ImportError:
        raise UnsupportedPlatform(f"{platform()}: {WINDOWS_ADVICE}") from None
    return fcntl


def reset() -> None:
    """Forget the cached facts (tests that simulate another system)."""
    for cached in (_clock, boot_id, pid_namespace, hostname):
        cached.cache_clear()
