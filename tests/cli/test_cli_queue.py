"""``pi-xi queue [list|stats]`` on a state directory whose SQLite store holds tasks (put there
directly), in-process for speed; the console script itself once; and through a daemon
(``PI_COORDINATOR_ADDR``), where the JSON is what the daemon's API answers."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cross_instance.cli.app import app
from cross_instance.core.workqueue import Task, total_stealing
from cross_instance.errors import InvalidArgument
from cross_instance.stores.sqlite.store import SqliteStore
from tests.conftest import record

LEASE = 60 * 10**9


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's environment: a state directory of the test's own, and no other store."""
    for name in ("PI_COORDINATOR_ADDR", "PI_STORE_URL", "PI_INSTANCE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PI_RUNTIME_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "state"


@pytest.fixture
def filled(env: Path) -> Iterator[SqliteStore]:
    """busy: 4 tasks (one running, one stolen by thief and done); the pool: a gone
    instance's task."""
    store = SqliteStore(env)
    for i in ("busy", "thief", "gone"):
        store.register_instance(record(i, lease_s=600))
    for n in range(4):
        store.put_task("busy", f"b{n}", "grep", n % 2, json.dumps({"n": n}), 3)
    store.put_task("gone", "orphan\tid", "", -3, "null", 3)
    store.unregister_instance("gone")
    taken = store.take_task("busy", LEASE)
    assert taken is not None and taken.task_id == "b1"
    stolen = store.steal_task("thief", LEASE, 2)
    assert stolen is not None and stolen.task_id == "b3"
    store.settle_task("b3", stolen.fence, "done", '"ok"')
    assert store.steal_task("thief", LEASE, 10) is None
    yield store
    store.close()


def pi_xi(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["queue", *args])
    return result.exit_code, result.output


def test_list_shows_the_tasks_and_json_is_the_apis(filled: SqliteStore) -> None:
    code, text = pi_xi()  # no subcommand: list
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0].split() == ["TASK", "OWNER", "TOOL", "PRIO", "STATE", "RUNS", "FENCE",
                                "LEASE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"b0", "b2", "orphan\\tid", "b1", "b3"}  # the tab shown escaped
    assert rows["orphan\\tid"][1:5] == ["(pool)", "-", "-3", "queued"]
    assert rows["b1"][1:7] == ["busy", "grep", "1", "running", "1/3", "1"]
    assert rows["b1"][8] == "s" and 0 < float(rows["b1"][7]) <= 60
    assert rows["b3"][1] == "thief" and rows["b3"][4] == "done"
    def same(out: str) -> str:  # the lease counts down between two runs
        return re.sub(r"\d+\.\d s$", "N s", out, flags=re.MULTILINE)

    assert same(pi_xi("list")[1]) == same(text)
    code, out = pi_xi("list", "--json")
    assert code == 0 and json.loads(out) == {"tasks": [t.to_json()
                                                       for t in filled.list_tasks()]}
    assert json.loads(pi_xi("--json")[1]) == json.loads(out)
    pool = json.loads(pi_xi("list", "--owner", "", "--json")[1])["tasks"]
    assert [(t["taskId"], t["owner"], t["payload"]) for t in pool] == [("orphan\tid", "", None)]
    code, text = pi_xi("list", "--state", "done")
    assert code == 0 and [line.split()[0] for line in text.splitlines()[1:]] == ["b3"]
    done = json.loads(pi_xi("list", "--state", "DONE", "--json")[1])["tasks"]
    assert [(t["taskId"], t["result"]) for t in done] == [("b3", "ok")]
    assert len(json.loads(pi_xi("list", "--limit", "2", "--json")[1])["tasks"]) == 2
    assert pi_xi("list", "--owner", "nobody") == (0, "No such tasks.\n")


def test_stats_per_instance_with_the_total(filled: SqliteStore) -> None:
    code, text = pi_xi("stats")
    assert code == 0, text
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line and line[0] not in "-I"}
    assert rows["busy"][1:5] == ["2", "1", "0", "0"]  # queued, running, done, failed
    assert rows["thief"][1:] == ["0", "0", "1", "0", "2", "1", "50.0%", rows["thief"][-1]]
    assert rows["(pool)"][1] == "1" and rows["gone"][1:5] == ["0", "0", "0", "0"]
    assert rows["TOTAL"][1:8] == ["3", "1", "1", "0", "2", "1", "50.0%"]
    counts = filled.queue_counts()
    code, out = pi_xi("stats", "--json")
    assert code == 0 and json.loads(out) == {
        "instances": [c.to_json() for c in counts],
        "stealing": total_stealing(counts).to_json()}
    assert json.loads(out)["stealing"]["successRate"] == 0.5


@pytest.mark.parametrize("args, option", [
    (["list", "--state", "lost"], "--state"), (["--state", "lost"], "--state"),
    (["list", "--limit", "0"], "--limit"), (["--limit", "many"], "--limit"),
    (["list", "--limit", "100001"], "--limit"),
    # before the subcommand they would be ignored: refused, naming where they go
    (["--state", "done", "list"], "--state before the subcommand"),
    (["--json", "stats"], "pi-xi queue stats --help"),
    (["--limit", "100", "stats"], "--limit before"),  # the default value, typed: refused too
    (["--limit", "1", "--owner", "a", "list"], "--owner, --limit before")])
def test_bad_arguments_exit_2_naming_the_option(env: Path, args: list[str],
                                                option: str) -> None:
    code, out = pi_xi(*args)
    assert code == 2 and option in out, out


def test_without_state_it_says_so_and_creates_none(env: Path) -> None:
    code, text = pi_xi()
    assert code == 0 and text.startswith(f"No state at {env}")
    assert json.loads(pi_xi("--json")[1]) == {"tasks": []}
    assert json.loads(pi_xi("stats", "--json")[1])["instances"] == []
    assert pi_xi("stats")[1].startswith("No state at")
    assert not env.exists()
    SqliteStore(env).close()  # a store without tasks
    assert pi_xi() == (0, "No tasks.\n")
    assert pi_xi("stats") == (0, "No tasks have been queued.\n")


def test_json_no_reader_could_take_back_is_refused_and_old_text_is_shown_as_text(
        env: Path) -> None:
    """Every store refuses what not every reader could take back as it was; a task written
    with such text (by an older version) is shown with the text itself, so output is JSON."""
    store = SqliteStore(env)
    store.register_instance(record("a", lease_s=600))
    texts = ["[NaN]", "Infinity", '"\\ud800"', "[" * 101 + "]" * 101, str(2**70)]
    for i, text in enumerate(texts):
        with pytest.raises(InvalidArgument, match="payload"):
            store.put_task("a", f"t{i}", "tool", 0, text, 3)
    kept = ["[" * 99 + "]" * 99, str(2**62), '{"ключ": ["emoji 🎉", 1.5, null]}', '"plain"']
    for i, text in enumerate(kept):
        store.put_task("a", f"k{i}", "tool", 0, text, 3)
    shown = {t.task_id: t.to_json()["payload"] for t in store.list_tasks()}
    assert shown["k1"] == 2**62 and shown["k3"] == "plain"
    assert shown["k2"] == {"ключ": ["emoji 🎉", 1.5, None]}
    old = Task("old", "a", "tool", 0, "[NaN]", 0, 1, error="[" * 101 + "]" * 101)
    assert old.to_json()["payload"] == "[NaN]" and old.to_json()["error"] == old.error
    json.dumps(old.to_json(), allow_nan=False)
    store.close()


def test_through_a_daemon_the_json_is_the_daemons(filled: SqliteStore,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.daemon.served_app import served_app

    with served_app(filled) as run, httpx.Client(base_url=run.base, timeout=30) as c:
        monkeypatch.setenv("PI_COORDINATOR_ADDR", run.addr)
        api: dict[str, Any] = c.get("/v1/queue/stats").json()
        assert json.loads(pi_xi("stats", "--json")[1]) == api
        listed = c.get("/v1/queue/tasks", params={"state": "queued"}).json()
        assert json.loads(pi_xi("list", "--state", "queued", "--json")[1]) == listed


def test_the_console_script(filled: SqliteStore, env: Path) -> None:
    run = {"cwd": env.parent, "env": {**os.environ}, "capture_output": True, "text": True,
           "timeout": 60}
    out = subprocess.run(["pi-xi", "queue", "--json"], check=False, **run)  # type: ignore[call-overload]
    assert out.returncode == 0 and len(json.loads(out.stdout)["tasks"]) == 5
    out = subprocess.run(["pi-xi", "queue", "list", "--state", "lost"], check=False, **run)  # type: ignore[call-overload]
    assert out.returncode == 2 and "--state" in out.stderr and "lost" in out.stderr
