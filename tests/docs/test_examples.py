"""Every Python example in the README and in docs/ runs, as written, against the project's
own fake provider on loopback: in a fresh interpreter whose working directory holds a
``.pi/config.json``, with the placeholders the examples use (``call_the_provider``, ``push``
...) defined to do real work (an HTTP call, a fenced write) and to record that they ran."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cross_instance.testing.fakeprovider import FakeProvider

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)

PRELUDE = '''
import json, os, sys, httpx, openai, anthropic
from cross_instance import Runtime
from cross_instance.integrations.httpx_transport import CoordinatedTransport, coordinated_client

URL = os.environ["DOC_FAKE_URL"]
ran = []
http = httpx.Client()
url = URL + "/v1/chat/completions"
body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
used, plan = 12, {"steps": 3}

def call_the_provider():
    ran.append("call_the_provider")
    return http.post(url, json=body)

def push(fencing_token):
    assert isinstance(fencing_token, int) and fencing_token >= 1
    ran.append("push")

def write_with_fencing(token):
    assert isinstance(token, int) and token >= 1
    ran.append("write_with_fencing")

def run_the_step():
    ran.append("run_the_step")

def abort():
    raise AssertionError("the lock was lost")

def lint(file, fence=None):
    assert fence is None or (isinstance(fence, int) and fence >= 1)
    ran.append("lint")
    return {"file": file, "problems": 0}

rt = Runtime.start()
'''
EPILOGUE = '''
rt.close()
print(json.dumps(ran))
'''


def examples() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in BLOCK.finditer(text):
            line = text[:m.start()].count("\n") + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", textwrap.dedent(m.group(2))))
    return found


def test_the_docs_have_examples():
    assert len(examples()) >= 7


@pytest.fixture(scope="module")
def fake():
    with FakeProvider(requests_per_minute=6000, burst=100) as provider:
        yield provider


@pytest.mark.parametrize(("where", "code"), examples(), ids=[w for w, _ in examples()])
def test_example_runs(where, code, fake, tmp_path):
    (tmp_path / ".pi").mkdir()
    (tmp_path / ".pi" / "config.json").write_text(json.dumps(
        {"crossInstance": {"runtimeDir": str(tmp_path / "state")}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PI_")}
    env["DOC_FAKE_URL"] = fake.url
    out = subprocess.run([sys.executable, "-c", PRELUDE + code + EPILOGUE], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{where}:\n{out.stderr}"
    ran = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("call_the_provider", "push", "write_with_fencing", "run_the_step", "lint"):
        if f"{name}(" in code:
            assert name in ran, f"{where}: {name} never ran"
