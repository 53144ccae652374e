"""An instance leaves the registry on exit and on SIGTERM/SIGINT without changing how the host
program ends; a second live instance cannot take its id."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from cross_instance.errors import DuplicateInstanceError
from cross_instance.runtime import Runtime
from cross_instance.stores.sqlite.store import SqliteStore
from tests.helpers_runtime import make_config

PRELUDE = """
import os, signal, sys, time
from pathlib import Path
from cross_instance.runtime import Runtime
from tests.helpers_runtime import make_config
state = Path(sys.argv[1])
"""


def spawn(tmp_path, body: str) -> subprocess.Popen[str]:
    script = PRELUDE + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "state")],
                            stdout=subprocess.PIPE, text=True, cwd=str(_root()))


def _root():
    import pathlib

    return pathlib.Path(__file__).resolve().parents[2]


def registered(tmp_path) -> list[str]:
    store = SqliteStore(tmp_path / "state", create=False)
    try:
        return [r.instance_id for r in store.list_instances()]
    finally:
        store.close()


START = """
rt = Runtime.start(cwd=state.parent, config=make_config(state), instance_id="child")
p = rt.permit("p")
print("ready", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_unregisters_and_the_process_ends_as_it_would_have(tmp_path, signum):
    proc = spawn(tmp_path, START + "time.sleep(60)\n")
    assert proc.stdout.readline().strip() == "ready"
    assert registered(tmp_path) == ["child"]
    proc.send_signal(signum)
    code = proc.wait(timeout=20)
    # SIGTERM: the default action still ran. SIGINT: Python's own KeyboardInterrupt exit,
    # which (since 3.8) also ends the process by the signal.
    assert code == -signum
    assert registered(tmp_path) == []


def test_normal_exit_code_is_kept_and_the_instance_leaves(tmp_path):
    proc = spawn(tmp_path, START + "sys.exit(3)\n")
    assert proc.wait(timeout=20) == 3
    assert registered(tmp_path) == []


def test_the_host_programs_own_handler_is_kept(tmp_path):
    body = textwrap.dedent("""
        def mine(signum, frame):
            print("host handler", flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, mine)
    """) + START + "time.sleep(60)\n"
    proc = spawn(tmp_path, body)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 7
    assert proc.stdout.readline().strip() == "host handler"
    assert registered(tmp_path) == []  # its sys.exit ran our atexit cleanup


def test_a_second_live_instance_with_the_same_id_is_refused(tmp_path):
    proc = spawn(tmp_path, START + "time.sleep(60)\n")
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(DuplicateInstanceError) as err:
            Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "state"),
                          instance_id="child")
        assert err.value.holder_pid == proc.pid
    finally:
        proc.kill()
        proc.wait()
    # once the holder is dead, the id is free again
    with Runtime.start(cwd=tmp_path, config=make_config(tmp_path / "state"),
                       instance_id="child") as rt:
        assert rt.instance_id == "child"
