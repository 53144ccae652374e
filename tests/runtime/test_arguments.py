"""Every public call names a bad argument (and what was given) before it takes or writes
anything: permits, reports, locks, workflows, the seed functions, the retry helper, start."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from cross_instance.errors import (
    InvalidArgument,
    LockRequestError,
    PermitRequestError,
    WorkflowRequestError,
)
from cross_instance.integrations import retry
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


@pytest.fixture
def rt(tmp_path):
    runtime = Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "state"),
                            instance_id="args")
    yield runtime
    runtime.close()


def _run(result):
    """Await what an async API returned (so both twins raise in the test's thread)."""
    if hasattr(result, "__await__"):
        async def wait():
            return await result
        return asyncio.run(wait())
    return result


HUGE = "x" * 10_000


@pytest.mark.parametrize("instance_id", ["a/b/../c", HUGE, "a\x00b", "a\nb", "", " x", 5])
def test_start_validates_an_instance_id_as_the_config_does(tmp_path, instance_id):
    with pytest.raises(InvalidArgument, match="instance_id") as err:
        Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "s"), instance_id=instance_id)
    assert len(str(err.value)) < 300  # the 10,000 characters are not echoed
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").glob("*.sqlite3"))


def test_start_checks_the_instance_id_of_a_config_built_in_code(tmp_path):
    import dataclasses

    cfg = dataclasses.replace(make_config(tmp_path / "s"), instance_id="../../etc")
    with pytest.raises(InvalidArgument, match="instance_id: invalid instance id"):
        Runtime.start(cwd=tmp_path, config=cfg)


def test_start_accepts_what_the_config_accepts(tmp_path):
    with Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "s"),
                       instance_id="host-1.a_b:c@d") as rt:
        assert rt.instance_id == "host-1.a_b:c@d"


@pytest.mark.parametrize("kwargs, fragment", [
    ({"cwd": 5}, "cwd must be a path"),
    ({"config": "x"}, "config must be a cross_instance.config.Config"),
    ({"session_id": 5}, "session_id must be"),
    ({"session_id": "a\nb"}, "session_id must be"),
])
def test_start_names_other_bad_arguments(tmp_path, kwargs, fragment):
    kwargs.setdefault("cwd", tmp_path)
    kwargs.setdefault("config", make_config(tmp_path / "s"))
    with pytest.raises(InvalidArgument, match=fragment):
        Runtime.start(**kwargs)


PERMIT_CASES = [
    ({"timeout": "1"}, r"timeout must be a number of seconds >= 0 or None \(got '1'\)"),
    ({"timeout": -1}, r"timeout must be a number of seconds >= 0 or None \(got -1\)"),
    ({"timeout": math.nan}, "timeout must be a number of seconds"),
    ({"timeout": True}, "timeout must be a number of seconds"),
    ({"reports": "yes"}, r"reports must be True or False \(got 'yes'\)"),
    ({"tokens": []}, r"tokens must be an integer >= 0 \(got \[\]\)"),
    ({"tokens": "5"}, "tokens must be an integer >= 0"),
    ({"model": 5}, "model 5"),
]


@pytest.mark.parametrize("kwargs, fragment", PERMIT_CASES)
@pytest.mark.parametrize("call", ["permit", "apermit"])
def test_permit_arguments_are_named(rt, call, kwargs, fragment):
    with pytest.raises(PermitRequestError, match=fragment) as err:
        _run(getattr(rt, call)("p", **kwargs))
    assert isinstance(err.value, TypeError) and isinstance(err.value, ValueError)
    assert rt.status()["activeRequests"] == 0  # nothing was taken


def test_permit_cancel_and_try_permit_arguments_are_named(rt):
    with pytest.raises(PermitRequestError, match=r"cancel must be a threading\.Event"):
        rt.permit("p", cancel=True)
    with pytest.raises(PermitRequestError, match="reports must be True or False"):
        rt.try_permit("p", reports=1)
    with pytest.raises(PermitRequestError, match="tokens must be an integer"):
        rt.try_permit("p", tokens={})
    rt.permit("p", cancel=threading.Event(), timeout=math.inf).release()  # the valid forms


REPORT_CASES = [
    (("abc",), {}, r"status must be an integer >= 0 and <= 999 \(got 'abc'\)"),
    ((True,), {}, "status must be an integer"),
    ((99_999,), {}, "status must be an integer"),
    ((429, 5), {}, "headers must be a mapping"),
    ((429, "retry-after: 1"), {}, "headers must be a mapping"),
    ((200,), {"body": 5}, "body must be str, bytes or None"),
    ((), {"error": "boom"}, "error must be the exception"),
    ((200, None, "12"), {}, "usage_tokens must be an integer >= 0"),
]


@pytest.mark.parametrize("args, kwargs, fragment", REPORT_CASES)
@pytest.mark.parametrize("how", ["report", "areport"])
def test_report_arguments_are_named(rt, how, args, kwargs, fragment):
    with rt.permit("p") as p:
        with pytest.raises(PermitRequestError, match=fragment):
            if how == "report":
                p.report(*args, **kwargs)
            else:
                _run(rt.areport(p, *args, **kwargs))
        p.report(200, [("x-ratelimit-limit-requests", "6000")])  # the valid forms
        p.report(429, {"retry-after": "nonsense"}, body=b"{}")


def test_areport_names_a_permit_that_is_not_one(rt):
    with pytest.raises(PermitRequestError, match="permit must be a Permit"):
        _run(rt.areport("p", 200))


def test_a_disabled_runtime_still_checks_reports(tmp_path):
    import dataclasses

    cfg = dataclasses.replace(make_config(tmp_path / "s"), enabled=False)
    with Runtime.start(cwd=tmp_path, config=cfg) as rt, rt.permit("p") as p:
        with pytest.raises(PermitRequestError, match="status must be"):
            p.report("abc")


LOCK_CASES = [
    (lambda rt: rt.locks.hold("r", timeout="x"), "timeout must be a number of seconds"),
    (lambda rt: rt.locks.hold("r", timeout=math.nan), "timeout must be a number of seconds"),
    (lambda rt: rt.locks.hold("r", on_lost="x"), "on_lost must be a callable"),
    (lambda rt: rt.locks.acquire("r", 1, cancel=object()), "cancel must be a threading.Event"),
    (lambda rt: rt.locks.try_acquire("r", 1, on_lost=5), "on_lost must be a callable"),
    (lambda rt: rt.locks.release("r"), "lock must be a HeldLock"),
    (lambda rt: rt.locks.ahold("r", timeout=-2).__aenter__(),
     "timeout must be a number of seconds"),
    (lambda rt: rt.locks.hold(5), "lock resource must be a non-empty string, got 5"),
    (lambda rt: rt.locks.hold("r", ttl="x"), "lock ttl must be a number of seconds, got 'x'"),
]


@pytest.mark.parametrize("call, fragment", LOCK_CASES)
def test_lock_arguments_are_named(rt, call, fragment):
    with pytest.raises(LockRequestError, match=fragment):
        _run(call(rt))
    assert rt.locks.list() == []


WORKFLOW_CASES = [
    (lambda rt: rt.workflows.hold("w", auto_claim="no"), "auto_claim must be True or False"),
    (lambda rt: rt.workflows.hold("w", keep=1), "keep must be True or False"),
    (lambda rt: rt.workflows.claim("w", auto_claim=None), "auto_claim must be True or False"),
    (lambda rt: rt.workflows.force_claim("w", allow_live="yes"), "allow_live must be True"),
    (lambda rt: rt.workflows.check("w", auto_claim=0), "auto_claim must be True"),
    (lambda rt: rt.workflows.write_state("w", "1", {}), r"epoch must be an integer >= 0"),
    (lambda rt: rt.workflows.write_state("w", 1, 5), "values must be a mapping"),
    (lambda rt: rt.workflows.release(5), "workflow id .* must be a non-empty string, got 5"),
]


@pytest.mark.parametrize("call, fragment", WORKFLOW_CASES)
def test_workflow_arguments_are_named(rt, call, fragment):
    with pytest.raises(WorkflowRequestError, match=fragment):
        call(rt)
    assert rt.workflows.get("w") is None  # nothing was claimed


SEED_CASES = [
    (lambda rt: rt.instances.set_workload("x"), "pending_task_count must be an integer >= 0"),
    (lambda rt: rt.instances.set_workload(-1), "pending_task_count must be an integer >= 0"),
    (lambda rt: rt.instances.set_workload(1, "fast"), "avg_latency_ms must be a number of "
                                                     "milliseconds"),
    (lambda rt: rt.instances.set_workload(1, None, 1.5), "active_orchestrations must be"),
    # a count no store gives back exactly (Redis's scripts hold doubles): refused, not stored
    (lambda rt: rt.instances.set_workload(2**62), "pending_task_count must be an integer >= 0 "
                                                  "and <= 9007199254740991"),
    (lambda rt: rt.instances.set_workload(1, None, 2**53), "active_orchestrations must be"),
    (lambda rt: rt.instances.dynamic_parallel_limit("x"), "my_pending_tasks must be an integer"),
    (lambda rt: rt.instances.use_model(5, "m"), "provider must be a non-empty string"),
    (lambda rt: rt.instances.use_model("p", None), "model must be a non-empty string"),
    (lambda rt: rt.instances.leave_model("p", ""), "model must be a non-empty string"),
    (lambda rt: rt.instances.using_model("p", 3), "model must be"),
    (lambda rt: rt.instances.model_parallel_limit("p", "m", "x"),
     "base_limit must be an integer >= 1"),
    (lambda rt: rt.instances.model_parallel_limit("p", "m", 0),
     "base_limit must be an integer >= 1"),
    (lambda rt: retry.call(rt, "p", lambda: 1, attempts="x"), "attempts must be an integer"),
    (lambda rt: retry.call(rt, "p", 5), "fn must be a callable"),
    (lambda rt: retry.acall(rt, "p", None), "fn must be a callable"),
]


@pytest.mark.parametrize("call, fragment", SEED_CASES)
def test_seed_and_retry_arguments_are_named(rt, call, fragment):
    with pytest.raises(InvalidArgument, match=fragment):
        _run(call(rt))
    assert rt.instances.model_usage()["models"] == []
