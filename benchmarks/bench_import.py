"""What importing the package costs a process, against a typical set of stdlib imports.

Every agent process imports ``cross_instance`` at start. Each measurement is a fresh
interpreter (``python -c``) timing its own import with ``time.perf_counter`` (interpreter
start-up excluded, the same for every case); the cases alternate round by round so that
machine noise falls on all of them alike. Cases:

- ``stdlib``: ``import asyncio, sqlite3, json, threading, logging`` (the issue's yardstick);
- ``package``: ``from cross_instance import Runtime``;
- ``package + config``: the same and then ``load_config`` of a small ``.pi/config.json``,
  which imports the config schema (pydantic), as ``Runtime.start`` does.

Installed packages import from bytecode (pip compiles it; an editable install writes it on
first import), as the standard library does, so each case runs once unmeasured first and
``PYTHONDONTWRITEBYTECODE`` is cleared for the children: a machine that sets it would otherwise
time the compiler, not the import.

With ``--before PATH`` (a checkout's ``src``) the package cases run on that tree too. Target:
``package`` at most 2 x ``stdlib``. Run: ``python benchmarks/bench_import.py``. Results:
``benchmarks/results/bench_import.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as common

NAME = "bench_import"
CASES = {
    "stdlib": "import asyncio, sqlite3, json, threading, logging",
    "package": "from cross_instance import Runtime",
    "package + config": ("from cross_instance import Runtime\n"
                         "from cross_instance.config import load_config\n"
                         "load_config({cwd!r}, env={{}})"),
}
TARGET_RATIO = 2.0


def measure(code: str, pythonpath: str | None) -> float:
    """Milliseconds that ``code`` took in a fresh interpreter."""
    script = ("import time\nt0 = time.perf_counter()\n" + code +
              "\nprint((time.perf_counter() - t0) * 1000)")
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode, as an installed package has it
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--before", default="", help="a checkout's src/ to measure as well")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parent.parent / "src")
    trees = [("this tree", here)] + ([("before", args.before)] if args.before else [])
    with tempfile.TemporaryDirectory() as cwd:
        Path(cwd, ".pi").mkdir()
        Path(cwd, ".pi", "config.json").write_text('{"crossInstance": {"totalMaxLlm": 4}}')
        samples: dict[str, list[float]] = {}
        for code in CASES.values():  # unmeasured: writes the bytecode every run uses
            for _, path in trees:
                measure(code.format(cwd=cwd), path)
        for _ in range(args.rounds):
            for case, code in CASES.items():
                for tree, path in trees if case != "stdlib" else [("", None)]:
                    key = case if not tree else f"{case} ({tree})"
                    samples.setdefault(key, []).append(measure(code.format(cwd=cwd), path))
    base = statistics.median(samples["stdlib"])
    rows = []
    for key, values in samples.items():
        med = statistics.median(values)
        rows.append({"case": key, "median_ms": med, "p90_ms": common.percentile(sorted(values), 90),
                     "ratio_to_stdlib": med / base, "n": len(values)})
    table = common.markdown_table(
        ["case", "median", "p90", "x stdlib set"],
        [[r["case"], f"{r['median_ms']:.0f} ms", f"{r['p90_ms']:.0f} ms",
          f"{r['ratio_to_stdlib']:.2f}"] for r in rows])
    print(table)
    payload: dict[str, Any] = {
        "benchmark": NAME, "label": args.label, "machine": common.machine_info(),
        "config": {"rounds": args.rounds, "cases": CASES, "trees": dict(trees),
                   "target_ratio": TARGET_RATIO},
        "rows": rows, "table": table}
    common.write_results(NAME, payload)


if __name__ == "__main__":
    main()
