from cross_instance.core import parallel
from cross_instance.core.ids import generate_instance_id, is_valid_instance_id
from cross_instance.core.liveness import Domain, Probe, Verdict, judge

HERE = Domain("h", "boot1", "ns1")


def v(age=0, record=HERE, probe=None, lease=10):
    return judge(heartbeat_age_ns=age, lease_ns=lease, record=record, local=HERE, probe=probe)


def test_stale_heartbeat_is_dead_everywhere():
    assert v(age=11, probe=Probe.SAME) is Verdict.DEAD
    assert v(age=11, record=Domain("other", "b", "n")) is Verdict.DEAD


def test_pid_checks_on_this_host():
    assert v(probe=Probe.SAME) is Verdict.ALIVE
    assert v(probe=Probe.MISSING) is Verdict.DEAD
    assert v(probe=Probe.REUSED) is Verdict.DEAD  # PID reuse is not life
    assert v(probe=Probe.UNREADABLE) is Verdict.UNKNOWN  # unknown, never dead


def test_other_boot_of_this_host_is_dead_other_host_lease_alone():
    assert v(record=Domain("h", "boot0", "ns1")) is Verdict.DEAD
    assert v(record=Domain("h", "unknown-boot", "ns1")) is Verdict.ALIVE  # cannot tell: lease
    assert v(record=Domain("far", "x", "y")) is Verdict.ALIVE


def test_parallel_limits():
    assert parallel.my_parallel_limit(6, 4) == 1
    assert parallel.my_parallel_limit(6, 2) == 3
    assert parallel.my_parallel_limit(6, 0) == 6
    assert parallel.my_parallel_limit(2, 5) == 1
    assert parallel.weighted_share(6, 1, [1, 1, 1]) == 2
    assert parallel.weighted_share(11, 10, [10, 1]) == 10
    assert parallel.weighted_share(11, 1, [10, 1]) == 1
    assert parallel.model_parallel_limit(6, 3) == 2
    assert parallel.dynamic_parallel_limit(6, 0, [0, 0]) == 3
    assert parallel.dynamic_parallel_limit(6, 9, [9, 3, 0]) == 3
    assert parallel.dynamic_parallel_limit(6, 0, [9, 3, 0]) == 1
    assert parallel.dynamic_parallel_limit(6, 3, [9, 3, 0]) == 1


def test_instance_ids():
    iid = generate_instance_id("my host.local", 12345, 1708940400000)
    assert iid == "my-host.local-12345-1708940400000"
    assert is_valid_instance_id(iid)
    assert not is_valid_instance_id("../etc")
    assert not is_valid_instance_id("")


def test_start_evidence_decides_only_what_it_can():
    from cross_instance.core.liveness import match_start

    assert match_start(100, 100, 0) is Probe.SAME
    assert match_start(100, None, 0) is Probe.MISSING
    assert match_start(100, 101, 0) is Probe.REUSED  # a later start at the pid: another process
    assert match_start(100, 99, 0) is Probe.UNREADABLE  # an earlier one contradicts the record
    assert match_start(0, 5, 0) is Probe.UNREADABLE  # nothing recorded: nothing to tell
    assert match_start(100, 109, 10) is Probe.SAME and match_start(100, 91, 10) is Probe.SAME
    assert match_start(100, 111, 10) is Probe.REUSED
    assert match_start(100, 89, 10) is Probe.UNREADABLE
