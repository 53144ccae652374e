"""The facade stays small, and the original coordinator's method names (and those of earlier
releases) keep working on a ``Runtime`` by forwarding to its parts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cross_instance import Runtime
from cross_instance.compat import seed
from tests.helpers_runtime import make_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@pytest.fixture
def rt(tmp_path):
    with Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "state"),
                       instance_id="a") as rt:
        yield rt


def test_the_facade_is_small_and_has_no_mixins():
    assert Runtime.__bases__ == (object,)
    public = sorted(n for n in dir(Runtime) if not n.startswith("_"))
    assert public == ["apermit", "areport", "close", "closed", "events", "instances", "locks",
                      "permit", "queue", "start", "status", "try_permit", "workflows"]


def test_every_old_name_is_the_part_method_it_moved_to(rt):
    for old, (part, new) in seed.MOVED.items():
        assert getattr(rt, old) == getattr(getattr(rt, part), new), old
    for old in seed.COMPOSED:
        assert callable(getattr(rt, old)), old
    with pytest.raises(AttributeError, match="no attribute 'claim_workflw'"):
        rt.claim_workflw  # noqa: B018 - a typo is an AttributeError, not a forwarded name


def test_old_names_work_end_to_end(rt):
    wf = rt.claim_workflow("wf")
    assert rt.get_workflow("wf").owner.instance_id == "a"
    assert rt.check_workflow_ownership("wf")["owned"] is True
    rt.write_workflow_state("wf", wf.epoch, {"k": 1})
    assert rt.release_workflow("wf") is True
    with rt.lock("res", ttl=5) as held:
        assert [lock.resource for lock in rt.list_locks()] == ["res"]
        assert rt.try_acquire_lock("res", ttl=5) is None
    assert held.released and rt.list_locks() == []
    rt.set_active_model("p", "m")
    assert rt.get_active_instances_for_model("p", "m") == 1
    assert rt.get_model_parallel_limit("p", "m", 4) == 4
    rt.enhanced_heartbeat()
    assert rt.get_active_instance_count() == 1 == len(rt.get_active_instances())
    assert rt.get_total_max_llm() == rt.config.total_max_llm
    assert rt.is_coordinator_initialized()
    status = rt.get_coordinator_status()
    assert status["registered"] and status["myInstanceId"] == "a"
    rt.close()
    assert not rt.is_coordinator_initialized()


def test_the_readme_table_of_moved_names_is_what_the_runtime_does(rt):
    text = DOC.read_text()
    name = r"`([a-z_]+)(?:\(id\))?`"
    parts = "locks|workflows|instances|events|queue"
    rows = re.findall(r"^\| " + name + r"(?:[^|]*)\| `rt\.(" + parts + r")\."
                      r"([a-z_]+)(?:\(id\))?` (?:\||/)", text, re.M)
    assert len(rows) >= 20, rows
    for old, part, new in rows:
        assert seed.MOVED[old] == (part, new), old
    listed = set(re.findall(r"^\| " + name, text, re.M)) | set(
        re.findall(r"^\| `[a-z_]+` / " + name, text, re.M))
    assert set(seed.NAMES) <= listed, set(seed.NAMES) - listed
    used = set(re.findall(r"`rt\.([a-z_]+)\(", text))
    assert used and all(hasattr(rt, name) for name in used), used
