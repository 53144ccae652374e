"""A store URL's password is never printed: a malformed URL, from ``PI_STORE_URL`` or from
``.pi/config.json``, is one line naming the problem, without the password and without a
traceback, through the real CLI and through the API."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from cross_instance.config import load_config
from cross_instance.errors import ConfigError
from cross_instance.runtime import Runtime
from cross_instance.stores import open_store
from cross_instance.stores.redis.connection import parse_url, redact

# (URL, what must never be shown): passwords holding '@', ':', '%40', '/', a user-only URL
# (redis-cli reads it as a password), bad schemes, a broken IPv6 literal, a bad port
BAD = [
    ("reddis://user:hunter2xyz@host", "hunter2xyz"),
    ("redis://u:hunter2xyz@[::1/0", "hunter2xyz"),
    ("redis://u:hun@ter2xyz@[::1/0", "ter2xyz"),
    ("redis://u:hun:ter2xyz@[::1", "ter2xyz"),
    ("redis://u:hun%40ter2xyz@[::1/0", "ter2xyz"),
    ("redis://u:hun/ter2xyz@host/0", "ter2xyz"),
    ("rediss://u:hun/ter2xyz@host:x/0", "ter2xyz"),
    ("redis://hunter2xyz@[::1/0", "hunter2xyz"),
    ("reddis:u:hunter2xyz@host", "hunter2xyz"),
    ("sqlite://u:hunter2xyz@host/x", "hunter2xyz"),
    ("http://:hunter2xyz@host", "hunter2xyz"),
    ("redis://u:hunter2xyz@host:99999/0", "hunter2xyz"),
    ("redis://u:hunter2xyz@host/0?pool=1", "hunter2xyz"),
    ("reddis://u:hunter2xyz@h\nost", "hunter2xyz"),
]
CLI_CASES = [BAD[0], BAD[1], BAD[2], BAD[4], BAD[5], BAD[7]]


def _clean(text: str, secret: str) -> None:
    assert secret not in text and "Traceback" not in text, text
    assert "hun@ter" not in text and "hun%40ter" not in text, text


@pytest.mark.parametrize(("url", "secret"), BAD)
def test_the_api_names_the_problem_without_the_password(tmp_path, monkeypatch, url, secret):
    for attempt in (lambda: parse_url(url), lambda: open_store(url),
                    lambda: load_config(tmp_path, env={"PI_STORE_URL": url})):
        with pytest.raises(ConfigError) as err:
            attempt()
        _clean(str(err.value), secret)
        assert "\n" not in str(err.value)
    # the file, then the environment, through Runtime.start()
    (tmp_path / ".pi").mkdir()
    (tmp_path / ".pi" / "config.json").write_text(json.dumps({"crossInstance": {"store": url}}))
    monkeypatch.delenv("PI_STORE_URL", raising=False)
    with pytest.raises(ConfigError) as err:
        Runtime.start(cwd=tmp_path)
    _clean(str(err.value), secret)
    assert err.value.source.endswith("config.json")
    (tmp_path / ".pi" / "config.json").unlink()
    monkeypatch.setenv("PI_STORE_URL", url)
    with pytest.raises(ConfigError) as err:
        Runtime.start(cwd=tmp_path)
    _clean(str(err.value), secret)
    assert err.value.source == "PI_STORE_URL"


@pytest.mark.parametrize("source", ["env", "file"])
def test_the_cli_says_one_line_without_the_password(tmp_path, source):
    for i, (url, secret) in enumerate(CLI_CASES):
        where = tmp_path / str(i)
        (where / ".pi").mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PI_")}
        env["PI_RUNTIME_DIR"] = str(where / "state")
        if source == "env":
            env["PI_STORE_URL"] = url
        else:
            (where / ".pi" / "config.json").write_text(
                json.dumps({"crossInstance": {"store": url}}))
        out = subprocess.run(["pi-xi", "status"], cwd=where, env=env, capture_output=True,
                             check=False, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        _clean(out.stdout + out.stderr, secret)
        assert out.stderr.startswith("pi-xi: ") and out.stderr.count("\n") == 1, out.stderr
        assert ("PI_STORE_URL" if source == "env" else "config.json") in out.stderr


def test_redact_keeps_the_user_and_the_host():
    assert redact("redis://u:p@ss@h:1/0") == "redis://u:***@h:1/0"
    assert redact("redis://tok@h") == "redis://***@h"
    assert redact("redis://h:1/0") == "redis://h:1/0"
    assert redact("rediss://:pw@[::1]:6380") == "rediss://:***@[::1]:6380"
    assert redact("redis://h\n:1") == "redis://h\\n:1"
    loc = parse_url("redis://u:hunter2xyz@h/0")
    assert "hunter2xyz" not in repr(loc) and "hunter2xyz" not in loc.where
