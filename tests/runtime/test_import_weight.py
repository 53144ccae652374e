"""``from cross_instance import Runtime`` loads what a permit needs and nothing else: no CLI,
chart, HTTP-server or SDK code, and not the config schema library (pydantic is imported when
a config section is validated, at ``Runtime.start``). Every agent process pays its imports
at start; ``benchmarks/bench_import.py`` measures them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pydantic", "typer", "rich", "matplotlib", "httpx", "http.server", "tenacity",
         "openai", "anthropic", "redis", "cross_instance.cli", "cross_instance.demo",
         "cross_instance.testing.fakeprovider", "cross_instance.integrations",
         "cross_instance.config.schema")


def _loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(out.stdout))


def test_importing_the_package_loads_nothing_heavy():
    loaded = _loaded("from cross_instance import Runtime")
    assert "cross_instance.runtime.facade" in loaded
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == []


def test_the_config_schema_comes_when_a_config_is_loaded(tmp_path):
    (tmp_path / ".pi").mkdir()
    (tmp_path / ".pi" / "config.json").write_text('{"crossInstance": {"totalMaxLlm": 3}}')
    loaded = _loaded(f"from cross_instance.config import load_config\n"
                     f"assert load_config({str(tmp_path)!r}, env={{}}).total_max_llm == 3")
    assert "cross_instance.config.schema" in loaded and "pydantic" in loaded


def test_parts_and_the_sqlite_store_load_on_first_use():
    loaded = _loaded("from cross_instance import Runtime")
    lazy = ("cross_instance.coordination.locks", "cross_instance.coordination.workflows",
            "cross_instance.coordination.instances", "cross_instance.coordination.events",
            "cross_instance.views.status",
            "cross_instance.compat.seed", "cross_instance.stores.sqlite.store")
    assert [m for m in lazy if m in loaded] == []
