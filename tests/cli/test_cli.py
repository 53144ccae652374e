"""``pi-xi status`` / ``pi-xi limits`` (and their aliases) as a user runs them: real console
scripts in a subprocess, text and ``--json``."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config


def cli(tmp_path, *args: str, config: dict | None = None) -> subprocess.CompletedProcess[str]:
    if config is not None:
        (tmp_path / ".pi").mkdir(exist_ok=True)
        (tmp_path / ".pi" / "config.json").write_text(json.dumps({"crossInstance": config}))
    env = {**os.environ, "PI_RUNTIME_DIR": str(tmp_path / "state")}
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)


def test_missing_state_directory_is_one_clear_line(tmp_path):
    out = cli(tmp_path, "pi-xi", "status")
    assert out.returncode == 0
    assert out.stdout.strip().startswith(f"No state at {tmp_path / 'state'}")
    data = json.loads(cli(tmp_path, "pi-xi", "status", "--json").stdout)
    assert data["instances"] == [] and "No state at" in data["message"]
    assert not (tmp_path / "state").exists()  # looking never creates state


def test_status_and_limits_of_live_instances(tmp_path):
    cfg = make_config(tmp_path / "state", rpm=10, burst=10)  # a token back every 6 s

    def refilled() -> range:
        """The burst available now: 8 after two permits, one more every 6 s (each CLI run
        may take seconds on a loaded machine)."""
        return range(8, min(10, 8 + int((time.monotonic() - first) / 6) + 1) + 1)

    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="analyzer-1") as rt:
        first = time.monotonic()
        rt.permit("p").release()
        held = rt.permit("p")
        rt.instances.heartbeat()
        text = cli(tmp_path, "pi_instance_status").stdout
        assert "Instance: analyzer-1" in text and "Status: Connected" in text
        assert "Active requests: 1" in text
        assert "p: 2/10 requests (20%)" in text
        data = json.loads(cli(tmp_path, "pi-xi", "status", "--json").stdout)
        (inst,) = data["instances"]
        assert inst["instanceId"] == "analyzer-1" and inst["activeRequests"] == 1
        assert inst["providers"]["p"] == {"used": 2, "limit": 10, "percent": 20}
        assert data["providers"]["p"]["burstAvailable"] in refilled()

        limits = cli(tmp_path, "pi_model_limits", "--provider", "p").stdout
        assert "Provider: p" in limits and "Requests/minute: 10" in limits
        assert "Current usage: 2/10" in limits
        assert any(f"Burst available: {n}\n" in limits for n in refilled())
        view = json.loads(cli(tmp_path, "pi-xi", "limits", "--json").stdout)
        assert view["providers"]["p"]["effective"]["currentUsage"] == 2
        assert view["providers"]["openai"]["configured"]["requestsPerMinute"] == 500
        held.release()
    text = cli(tmp_path, "pi-xi", "status").stdout
    assert text.strip() == f"No instances registered (state: {tmp_path / 'state'})."


def test_limits_without_shared_state_show_the_configuration(tmp_path):
    out = cli(tmp_path, "pi-xi", "limits", "--provider", "anthropic")
    assert "Requests/minute: 50" in out.stdout and "Burst: 25" in out.stdout
    assert "No shared state yet" in out.stdout


@pytest.mark.parametrize("config, fragment", [
    ({"providers": {"openai": {"burst": 20000}}},
     "crossInstance.providers.openai.burst: must be <= 10000 (got 20000)"),
    ({"totalMaxLlm": "6"}, "crossInstance.totalMaxLlm"),
    ({"bogus": 1}, "crossInstance.bogus: unknown key"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, config, fragment):
    out = cli(tmp_path, "pi-xi", "status", config=config)
    assert out.returncode == 2
    assert fragment in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_bad_cli_arguments_are_refused(tmp_path):
    out = cli(tmp_path, "pi-xi", "demo", "--instances", "0")
    assert out.returncode == 2 and "instances" in out.stderr


def test_limits_show_learned_state_and_reset_forgets_it(tmp_path):
    from cross_instance.core.limits import AdaptiveSettings
    from cross_instance.core.records import Outcome

    cfg = make_config(tmp_path / "state", rpm=600, burst=10)
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="learner") as rt:
        p = rt.permit("p")
        rt.store.record_outcome(["r:p"], Outcome(p.granted_ns, True, 60 * 10**9,
                                                 (("r:p", 100, 0, None),)), AdaptiveSettings())
        text = cli(tmp_path, "pi-xi", "limits", "--provider", "p").stdout
        assert "Learned: 100/min (stated by the provider)" in text
        assert "Cooldown: 5" in text or "Cooldown: 6" in text
        data = json.loads(cli(tmp_path, "pi-xi", "limits", "--json").stdout)
        eff = data["providers"]["p"]["effective"]
        assert eff["learnedRequestsPerMinute"] == 100 and eff["cooldownRemainingS"] > 50
        out = cli(tmp_path, "pi-xi", "limits", "reset", "--provider", "p")
        assert out.stdout.strip() == "Reset the learned state of p: 1 bucket(s)."
        text = cli(tmp_path, "pi-xi", "limits", "--provider", "p").stdout
        assert "Learned:" not in text and "Cooldown:" not in text
        assert json.loads(cli(tmp_path, "pi-xi", "limits", "reset", "--json").stdout) == {
            "reset": 1}
        p.release()
