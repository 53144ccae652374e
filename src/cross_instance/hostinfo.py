"""Facts about this host and its processes, read from the kernel (Linux ``/proc``).

The one-host clock is ``CLOCK_BOOTTIME``: it never jumps with the wall clock, keeps counting
through suspend, and is the same for every process of a boot, so leases and rate windows stored
in it mean the same to every instance. A process is identified by (boot id, pid namespace, pid,
start time in clock ticks since boot): a pid that comes back with another start time is another
process.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from dataclasses import dataclass

from cross_instance.core.liveness import Domain, Probe, Verdict, judge
from cross_instance.core.records import InstanceRecord


def boottime_ns() -> int:
    """Nanoseconds since boot, including suspend; comparable across processes of one boot."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@functools.cache
def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        # No /proc (not Linux): the boot time in wall seconds identifies the boot well enough.
        return f"wall-{int(time.time() - time.monotonic())}"


@functools.cache
def pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "pid:[default]"


@functools.cache
def hostname() -> str:
    return socket.gethostname()


def local_domain() -> Domain:
    return Domain(hostname(), boot_id(), pid_namespace())


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of ``/proc/PID/stat``),
    or None when there is no such process. Raises PermissionError/OSError when unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except ProcessLookupError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(b")") + 2 :].split()
    return int(rest[19])


def probe(pid: int, expected_start_ticks: int) -> Probe:
    """Is ``pid`` the process that started at ``expected_start_ticks``?"""
    try:
        ticks = start_ticks(pid)
    except (OSError, ValueError, IndexError):
        return Probe.UNREADABLE
    if ticks is None:
        return Probe.MISSING
    return Probe.SAME if ticks == expected_start_ticks else Probe.REUSED


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    pid: int
    start_ticks: int
    domain: Domain


@functools.cache
def _self_identity(pid: int) -> ProcessIdentity:
    return ProcessIdentity(pid, start_ticks(pid) or 0, local_domain())


def self_identity() -> ProcessIdentity:
    """This process's identity (re-read after a fork: the pid is part of the cache key)."""
    return _self_identity(os.getpid())


NETWORK_FS_TYPES = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "afs",
     "gpfs", "beegfs", "ocfs2", "gfs2", "davfs", "sshfs", "virtiofs"}
)


def read_mountinfo() -> str:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def filesystem_type(path: str, mountinfo: str) -> str | None:
    """The file system type of the mount holding ``path`` (longest mount-point prefix)."""
    best, best_type = -1, None
    target = os.path.realpath(path)
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        mount_point = fields[4].replace("\\040", " ")
        prefix = mount_point.rstrip("/") + "/"
        if (target == mount_point or target.startswith(prefix)) and len(mount_point) > best:
            fs = right.split()
            best, best_type = len(mount_point), (fs[0] if fs else None)
    return best_type


def is_network_fs(fs_type: str | None) -> bool:
    if fs_type is None:
        return False
    return fs_type in NETWORK_FS_TYPES or (fs_type.startswith("fuse") and fs_type != "fuseblk")


def verdict(record: InstanceRecord, now_ns: int) -> Verdict:
    """Liveness of ``record`` at store time ``now_ns``, probing its pid when it is local."""
    local = local_domain()
    seen = probe(record.pid, record.start_ticks) if record.domain == local else None
    return judge(heartbeat_age_ns=now_ns - record.heartbeat_ns, lease_ns=record.lease_ns,
                 record=record.domain, local=local, probe=seen)
