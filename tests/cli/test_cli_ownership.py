"""``pi-xi workflow ...`` and ``pi-xi locks`` as a user runs them: real console scripts in a
subprocess against live instances, text and ``--json``."""

from __future__ import annotations

import json

import pytest

from cross_instance.errors import StaleEpochError
from cross_instance.runtime import Runtime
from tests.cli.test_cli import cli
from tests.conftest import record
from tests.helpers_runtime import make_config


def test_workflow_commands_both_forms(tmp_path):
    cfg = make_config(tmp_path / "state", timeout_ms=30_000)  # no expiry under load
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="agent-a") as a, \
            Runtime.start(cwd=tmp_path, config=cfg, instance_id="agent-b"):
        assert cli(tmp_path, "pi-xi", "workflow", "status").stdout.strip() == "No workflows."
        assert json.loads(cli(tmp_path, "pi-xi", "workflow", "status", "--json").stdout) == []

        out = cli(tmp_path, "pi-xi", "workflow", "claim", "wf-1", "--instance", "agent-a")
        assert out.returncode == 0 and out.stdout.strip() == "wf-1: claimed for agent-a at epoch 1"
        data = json.loads(cli(tmp_path, "pi-xi", "workflow", "claim", "wf-1", "--instance",
                              "agent-a", "--json").stdout)
        assert data == {"ulTaskId": "wf-1", "ownerInstanceId": "agent-a", "epoch": 1,
                        "action": "owned"}

        refused = cli(tmp_path, "pi-xi", "workflow", "claim", "wf-1", "--instance", "agent-b",
                      "--json")
        assert refused.returncode == 1
        payload = json.loads(refused.stdout)
        assert payload["error"] == "workflow_owned_by_other"
        assert payload["ownerInstanceId"] == "agent-a"
        assert payload["ownerPid"] == a.session.membership.record.pid
        assert payload["outcomeCode"] == "NONRETRYABLE_FAILURE"
        assert payload["retryRecommended"] is False
        text = cli(tmp_path, "pi-xi", "workflow", "claim", "wf-1", "--instance", "agent-b")
        assert text.returncode == 1 and "owned by another instance (agent-a" in text.stdout

        status = cli(tmp_path, "pi-xi", "status").stdout
        assert "Workflows owned: wf-1" in status
        by_id = {i["instanceId"]: i for i in json.loads(
            cli(tmp_path, "pi-xi", "status", "--json").stdout)["instances"]}
        assert by_id["agent-a"]["workflows"] == ["wf-1"] and by_id["agent-b"]["workflows"] == []
        row = json.loads(cli(tmp_path, "pi-xi", "workflow", "status", "wf-1", "--json").stdout)
        assert row["state"] == "alive" and row["epoch"] == 1 and row["ownerInstanceId"] == "agent-a"
        table = cli(tmp_path, "pi-xi", "workflow", "status").stdout
        assert "wf-1" in table and "alive" in table and "agent-a" in table

        forced = cli(tmp_path, "pi-xi", "workflow", "force-claim", "wf-1", "--instance",
                     "agent-b")
        assert forced.returncode == 1 and "--live" in forced.stdout
        forced = cli(tmp_path, "pi-xi", "workflow", "force-claim", "wf-1", "--instance",
                     "agent-b", "--live", "--json")
        assert json.loads(forced.stdout)["action"] == "force_claimed"
        assert json.loads(forced.stdout)["epoch"] == 2

        not_owner = cli(tmp_path, "pi-xi", "workflow", "release", "wf-1", "--instance",
                        "agent-a")
        assert not_owner.returncode == 1 and "not owned by agent-a" in not_owner.stdout
        released = cli(tmp_path, "pi-xi", "workflow", "release", "wf-1", "--instance",
                       "agent-b", "--live", "--json")  # agent-b is alive: --live needed
        assert json.loads(released.stdout)["released"] is True
        assert "released" in cli(tmp_path, "pi-xi", "workflow", "status").stdout
        kinds = [e.kind for e in a.store.events()]
        assert kinds.count("workflow_force_claimed") == 1 and "workflow_released" in kinds


def test_workflow_cli_bad_input(tmp_path):
    cfg = make_config(tmp_path / "state")
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="agent-a"):
        no_instance = cli(tmp_path, "pi-xi", "workflow", "claim", "wf")
        assert no_instance.returncode == 2 and "--instance" in no_instance.stderr
        ghost = cli(tmp_path, "pi-xi", "workflow", "claim", "wf", "--instance", "ghost")
        assert ghost.returncode == 1 and "'ghost' is not registered" in ghost.stderr
        bad = cli(tmp_path, "pi-xi", "workflow", "claim", "a\tb", "--instance", "agent-a")
        assert bad.returncode == 2 and "control character" in bad.stderr


def test_locks_list_and_cleanup(tmp_path):
    cfg = make_config(tmp_path / "state")
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="agent-a") as a:
        assert cli(tmp_path, "pi-xi", "locks").stdout.strip() == "No locks held."
        held = a.locks.try_acquire("repo/main branch", ttl=60)
        a.locks.try_acquire("short", ttl=0.05)
        rows = json.loads(cli(tmp_path, "pi-xi", "locks", "--json").stdout)
        mine = {r["resource"]: r for r in rows}["repo/main branch"]
        assert mine["holder"] == "agent-a" and mine["token"] == held.token
        assert mine["lockId"] == held.lock_id and 0 < mine["expiresInS"] <= 60
        assert "Locks held: repo/main branch, short" in cli(tmp_path, "pi-xi", "status").stdout
        text = cli(tmp_path, "pi-xi", "locks").stdout
        assert "repo/main branch" in text and "agent-a" in text and "(expired)" in text
        freed = json.loads(cli(tmp_path, "pi-xi", "locks", "cleanup", "--json").stdout)
        assert freed == {"freed": ["short"]}
        assert cli(tmp_path, "pi-xi", "locks", "cleanup").stdout.strip() == "Freed 0 lock(s)."


def test_releasing_a_live_owners_workflow_needs_live_and_names_who_did_it(tmp_path):
    cfg = make_config(tmp_path / "state", timeout_ms=30_000)
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="agent-a") as a:
        wf = a.workflows.claim("wf-1")
        refused = cli(tmp_path, "pi-xi", "workflow", "release", "wf-1", "--instance", "agent-a")
        assert refused.returncode == 1
        assert "agent-a is alive" in refused.stdout and "--live" in refused.stdout
        as_json = cli(tmp_path, "pi-xi", "workflow", "release", "wf-1", "--instance", "agent-a",
                      "--json")
        assert as_json.returncode == 1
        assert json.loads(as_json.stdout)["error"] == "owner_alive"
        wf.ensure()  # still agent-a's, at the same epoch
        assert a.workflows.get("wf-1").owner.instance_id == "agent-a"

        done = cli(tmp_path, "pi-xi", "workflow", "release", "wf-1", "--instance", "agent-a",
                   "--live", "--json")
        assert done.returncode == 0
        data = json.loads(done.stdout)
        assert data["released"] is True and data["ownerState"] == "alive"
        assert data["by"].startswith("pi-xi (pid ") and data["by"].endswith(" for agent-a")
        events = [e for e in a.store.events() if e.kind == "workflow_released"]
        assert events[-1].instance_id == "agent-a"
        assert events[-1].data == {"workflow": "wf-1", "by": data["by"]}
        with pytest.raises(StaleEpochError):
            wf.ensure()


def test_a_dead_owners_workflow_is_released_without_live(tmp_path):
    cfg = make_config(tmp_path / "state", timeout_ms=30_000)
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="agent-a") as a:
        ghost = record("ghost", start_ticks=1)  # its pid now belongs to a process started later
        a.store.register_instance(ghost)
        assert a.store.claim_workflow("wf-2", "ghost").allowed
        done = cli(tmp_path, "pi-xi", "workflow", "release", "wf-2", "--instance", "ghost")
        assert done.returncode == 0 and "released for ghost (dead) by pi-xi (pid" in done.stdout
        assert a.workflows.get("wf-2").owner is None
