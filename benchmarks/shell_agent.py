"""One agent process as users start them, for ``bench_permits.py``'s shell-started runs:
``python benchmarks/shell_agent.py`` in its own working directory, whose ``.pi/config.json``
the runtime reads (the state directory named there is shared by every agent), with its id
from ``PI_INSTANCE_ID`` and its log in ``.pi/logs/`` as usual. It starts, takes 20 untimed
permits, prints ``ready``, waits for a ``go <seconds>`` line on stdin, then does
``with rt.permit("bench"): pass`` in a loop for that long and prints one JSON line with the
fields ``bench_permits.summarize`` reads (latency arrays base64-encoded)."""

from __future__ import annotations

import array
import base64
import json
import sys
import time

from cross_instance import Runtime


def main() -> None:
    rt = Runtime.start()
    try:
        for _ in range(20):
            with rt.permit("bench"):
                pass
        print("ready", flush=True)
        duration = float(sys.stdin.readline().split()[1])
        pc = time.perf_counter_ns
        acq: array.array[int] = array.array("q")
        cyc: array.array[int] = array.array("q")
        ok = errors = 0
        first_error = None
        start = pc()
        end = start + int(duration * 1e9)
        while pc() < end:
            t0 = pc()
            try:
                with rt.permit("bench"):
                    t1 = pc()
            except Exception as err:  # noqa: BLE001 - a benchmark counts failures
                errors += 1
                first_error = first_error or repr(err)
                continue
            t2 = pc()
            ok += 1
            acq.append(t1 - t0)
            cyc.append(t2 - t0)
        elapsed = (pc() - start) / 1e9
    finally:
        rt.close()
    print(json.dumps({"ok": ok, "refused": 0, "errors": errors, "first_error": first_error,
                      "elapsed_s": elapsed,
                      "acq": base64.b64encode(acq.tobytes()).decode(),
                      "cyc": base64.b64encode(cyc.tobytes()).decode()}), flush=True)


if __name__ == "__main__":
    main()
