"""``pi-xi events`` as a user runs it: the real console script in a subprocess, text lines,
``--json`` lines, ``--after``/``--limit``, and ``--follow`` until Ctrl-C."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading

from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config

ODD = 'wf "one"=two\u2028three ü'  # quotes, '=', a line separator, non-ASCII
DEADLINE_S = 30.0


def _env(tmp_path):
    return {**os.environ, "PI_RUNTIME_DIR": str(tmp_path / "state")}


def cli(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pi-xi", "events", *args], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=60)


def test_no_state_is_one_line_and_no_error(tmp_path):
    out = cli(tmp_path)
    assert out.returncode == 0 and out.stdout == ""
    assert out.stderr.startswith(f"No state at {tmp_path / 'state'}")
    assert not (tmp_path / "state").exists()  # looking never creates state


def test_text_and_json_lines_after_and_limit(tmp_path):
    cfg = make_config(tmp_path / "state", timeout_ms=30_000)
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="analyzer-1") as rt:
        rt.workflows.claim(ODD)
        text = cli(tmp_path).stdout.splitlines()
        assert len(text) == 2  # one line per event, whatever the names hold
        assert "  instance_up  analyzer-1  " in text[0]
        assert "  workflow_claimed  analyzer-1  " in text[1]
        assert 'workflow="wf \\"one\\"=two\\u2028three ü"' in text[1]
        lines = [json.loads(line) for line in cli(tmp_path, "--json").stdout.splitlines()]
        assert [e["kind"] for e in lines] == ["instance_up", "workflow_claimed"]
        assert lines[1]["data"]["workflow"] == ODD and lines[1]["instanceId"] == "analyzer-1"
        assert lines[0]["eventId"] < lines[1]["eventId"] and lines[1]["wallMs"] > 0
        after = cli(tmp_path, "--json", "--after", str(lines[0]["eventId"])).stdout.splitlines()
        assert [json.loads(line)["eventId"] for line in after] == [lines[1]["eventId"]]
        newest = cli(tmp_path, "--json", "--limit", "1").stdout.splitlines()
        assert [json.loads(line)["eventId"] for line in newest] == [lines[1]["eventId"]]
        bad = cli(tmp_path, "--limit", "0")
        assert bad.returncode == 2


def test_follow_prints_new_events_until_ctrl_c(tmp_path):
    cfg = make_config(tmp_path / "state", timeout_ms=30_000)
    with Runtime.start(cwd=tmp_path, config=cfg, instance_id="a") as rt:
        proc = subprocess.Popen(["pi-xi", "events", "--follow", "--json", "--poll", "0.05"],
                                cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert json.loads(lines.get(timeout=DEADLINE_S))["kind"] == "instance_up"
            rt.workflows.claim("later")  # written while it follows
            event = json.loads(lines.get(timeout=DEADLINE_S))
            assert event["kind"] == "workflow_claimed" and event["data"]["workflow"] == "later"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=DEADLINE_S) == 0
            assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
