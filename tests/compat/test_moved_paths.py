"""Modules moved by the role layout keep the import paths and commands an earlier README
documented: ported code and scripts keep working."""

from __future__ import annotations

import subprocess
import sys
import urllib.request


def test_old_module_paths_are_the_new_objects():
    from cross_instance import coordinator, delegation, retry
    from cross_instance.compat import coordinator as new_coordinator
    from cross_instance.compat import delegation as new_delegation
    from cross_instance.integrations import retry as new_retry

    for old, new in ((coordinator, new_coordinator), (delegation, new_delegation),
                     (retry, new_retry)):
        assert old.__all__ == new.__all__ and old.__all__
        for name in new.__all__:
            assert getattr(old, name) is getattr(new, name), (old.__name__, name)


def test_old_fakeprovider_path_and_command():
    from cross_instance.fakeprovider import FakeProvider
    from cross_instance.testing.fakeprovider import FakeProvider as Moved

    assert FakeProvider is Moved
    proc = subprocess.Popen([sys.executable, "-m", "cross_instance.fakeprovider", "--port", "0",
                             "--rpm", "600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() else "")
        url = line[line.index("http://"):].split()[0].rstrip("/")
        with urllib.request.urlopen(url + "/stats", timeout=10) as reply:
            assert reply.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
