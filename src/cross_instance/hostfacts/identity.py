"""Facts about this host and its processes, for the rest of the package: one place that asks
the selected host-facts backend (``hostfacts``: ``/proc`` on Linux, psutil elsewhere) and the
operating system's clock and boot identity (``hostfacts.system``).

A process is identified by (domain, pid, start evidence), where the domain is (host, boot id,
backend and pid namespace): a pid that comes back with a later start is another process, and
evidence is only ever compared within one domain.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from cross_instance import hostfacts
from cross_instance.core.liveness import Domain, Probe, Verdict, judge
from cross_instance.core.records import InstanceRecord
from cross_instance.hostfacts import system


def boottime_ns() -> int:
    """Nanoseconds on the host clock (``CLOCK_BOOTTIME`` on Linux, ``CLOCK_MONOTONIC`` on
    macOS): since boot, sleep included, comparable across processes of one boot."""
    return system.clock_ns()


def clock_name() -> str:
    return system.clock_name()


def boot_id() -> str:
    return system.boot_id()


def hostname() -> str:
    return system.hostname()


@functools.cache
def backend() -> hostfacts.ProcessFacts:
    """The host-facts backend of this process (``PI_XI_HOST_FACTS``, read once)."""
    return hostfacts.select()


def pid_namespace() -> str:
    """Where this process's pids and start evidence mean something: the backend and the pid
    namespace (``linux:pid:[4026531836]``, ``portable:pid:[default]``)."""
    return f"{backend().name}:{system.pid_namespace()}"


def local_domain() -> Domain:
    return Domain(hostname(), boot_id(), pid_namespace())


def start_ticks(pid: int) -> int | None:
    """The start evidence of ``pid`` on this process's backend, or None when there is no such
    process. Raises ``hostfacts.UnreadableFact`` (an ``OSError``) when it cannot be told."""
    return backend().start_evidence(pid)


def probe(pid: int, expected_start_ticks: int) -> Probe:
    """Is ``pid`` the process that recorded ``expected_start_ticks`` (on this backend)?"""
    return backend().probe(pid, expected_start_ticks)


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    pid: int
    start_ticks: int  # start evidence on the backend named in ``domain.pid_ns``; 0 = unknown
    domain: Domain


@functools.cache
def _self_identity(pid: int) -> ProcessIdentity:
    return ProcessIdentity(pid, backend().own_evidence(pid), local_domain())


def self_identity() -> ProcessIdentity:
    """This process's identity (re-read after a fork: the pid is part of the cache key)."""
    return _self_identity(os.getpid())


def reset() -> None:
    """Forget every cached fact and the backend choice (tests switching backend or
    simulating another system)."""
    backend.cache_clear()
    _self_identity.cache_clear()
    system.reset()


NETWORK_FS_TYPES = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "afs",
     "gpfs", "beegfs", "ocfs2", "gfs2", "davfs", "sshfs", "virtiofs"}
)


def read_mountinfo() -> str:
    """The mount table in ``/proc/self/mountinfo``'s format; where there is none (macOS),
    psutil's list of mounts written in that format, so network file systems are refused there
    too ("" when neither can be read)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        pass
    try:
        import psutil  # type: ignore[import-untyped]

        mounts = psutil.disk_partitions(all=True)
    except Exception:  # noqa: BLE001 - psutil missing or unreadable: no table
        return ""
    return "".join(
        f"0 0 0:0 / {str(m.mountpoint).replace(' ', chr(92) + '040')} rw - {m.fstype} "
        f"{str(m.device).replace(' ', '_') or '-'} rw\n" for m in mounts)


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
