"""The Redis store's liveness verdict (registry.lua's ``judge``, used by claims, locks, reaping
and registration) is exactly ``core.liveness.judge`` on the same record: a differential
property test over leases, heartbeats, host/boot/pid-namespace domains and pid probes, against
the Redis on 127.0.0.1:6379 (the probe script only computes; no keys).

The scripts have no pid probe of their own: the caller sends what probing this host's pids
showed (``evidence``: instance id -> pid, start ticks, probe), and a script uses it only if it
describes the very process of the record. So the core's probe here is that evidence's, or none
(it could not be told) when there is none for this process."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cross_instance.core.liveness import UNKNOWN_BOOT, Domain, Probe, judge
from cross_instance.stores.redis import scripts

NOW = 1_764_000_000_000_000  # µs since the epoch: the magnitude TIME gives
TEXT = st.sampled_from(["a", "b", "a:b", "x\ty", "n\nl", "é", "😀", "p: q\t\n"]) | st.text(
    st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=8)
HOSTS = ["h", "h2", "é:h\t"]
BOOTS = ["b", "b2", UNKNOWN_BOOT]
PIDNS = ["linux:pid:[4026531836]", "portable:pid:[default]"]


@pytest.fixture(scope="module")
def probe(shared_redis):
    script = shared_redis.register_script(scripts.source("liveness_probe"))
    return script


@st.composite
def domains(draw):
    return Domain(draw(st.sampled_from(HOSTS)), draw(st.sampled_from(BOOTS)),
                  draw(st.sampled_from(PIDNS)))


@st.composite
def states(draw):
    names = draw(st.lists(TEXT, min_size=1, max_size=3, unique=True))
    rec_id = draw(st.sampled_from(names))
    record = draw(domains())
    local = draw(st.just(record) | domains())
    pid, ticks = draw(st.sampled_from([1, 7, 4_194_304])), draw(st.sampled_from([0, 5, 2**40]))
    lease = draw(st.integers(1, 60_000_000))
    age = draw(st.sampled_from([lease, lease + 1, -1, 0]) | st.integers(-5_000_000, 2 * lease))
    now = NOW + draw(st.integers(-10**9, 10**9))
    evidence = {}
    for iid in draw(st.lists(st.sampled_from(names), unique=True)):
        evidence[iid] = {"pid": draw(st.sampled_from([pid, pid + 1])),
                         "ticks": draw(st.sampled_from([ticks, ticks + 1])),
                         "probe": draw(st.sampled_from(Probe)).value}
    return rec_id, record, local, pid, ticks, now - age, lease, now, evidence


def core_probe(rec_id: str, pid: int, ticks: int, evidence: dict) -> Probe | None:
    """The probe the core would have: the evidence about this very process, if any."""
    e = evidence.get(rec_id)
    if e is None or e["pid"] != pid or e["ticks"] != ticks:
        return None
    return Probe(e["probe"])


H = Domain("h", "b", PIDNS[0])


def state(record: Domain, local: Domain, age: int = 0, probe: str | None = None,
          pid: int = 7) -> tuple:
    evidence = {} if probe is None else {"a": {"pid": pid, "ticks": 5, "probe": probe}}
    return "a", record, local, 7, 5, NOW - age, 1_000_000, NOW, evidence


@settings(max_examples=800, deadline=None)
@given(states())
@example(state(H, H, age=1_000_000, probe="same"))  # exactly the lease old: still alive
@example(state(H, H, age=1_000_001, probe="same"))  # a µs past it: dead
@example(state(H, H, probe="missing"))
@example(state(H, H, probe="reused"))
@example(state(H, H, probe="unreadable"))
@example(state(H, H, probe="missing", pid=8))  # evidence about another process: unknown
@example(state(H, H))  # not probed
@example(state(Domain("h", "b0", H.pid_ns), H))  # before this host rebooted: dead
@example(state(Domain("h", UNKNOWN_BOOT, H.pid_ns), H))  # no boot id: only the lease tells
@example(state(H, Domain("h", UNKNOWN_BOOT, H.pid_ns)))  # nor when the caller has none
@example(state(Domain("h", "b", PIDNS[1]), H))  # another pid namespace of this boot
@example(state(Domain("far", "b0", H.pid_ns), H))  # another host
def test_lua_judge_matches_the_core(probe, state):
    rec_id, record, local, pid, ticks, heartbeat, lease, now, evidence = state
    expected = judge(heartbeat_age_ns=(now - heartbeat) * 1000, lease_ns=lease * 1000,
                     record=record, local=local, probe=core_probe(rec_id, pid, ticks, evidence))
    # the record as load_instance reads it (raw text); here and evidence as the store sends them
    rec = {"id": rec_id, "host": record.host, "boot": record.boot_id, "pidns": record.pid_ns,
           "pid": pid, "ticks": ticks, "hb_us": heartbeat, "lease_us": lease}
    here = {"host": local.host, "boot": local.boot_id, "pidns": local.pid_ns}
    got = probe(keys=[], args=[json.dumps(rec, ensure_ascii=False), now, json.dumps(here),
                               json.dumps(evidence)])
    assert got == expected.value.encode()
