"""Several processes share one rotating log file without losing or mangling lines."""

from __future__ import annotations

from cross_instance.runtime.logs import SharedRotatingFile
from tests.processes.spawn import CTX  # forkserver, the package preloaded


def write_lines(path: str, tag: str, n: int, barrier) -> None:
    from pathlib import Path

    f = SharedRotatingFile(Path(path), max_bytes=20_000, backups=50)
    barrier.wait()
    for i in range(n):
        f.write(f"{tag} line {i:05d} {'x' * 40}\n".encode())
    f.close()


def test_concurrent_writers_and_rotation(tmp_path):
    path = tmp_path / "coordinator.log"
    barrier = CTX.Barrier(4)
    procs = [CTX.Process(target=write_lines, args=(str(path), f"w{k}", 1000, barrier))
             for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    files = [path, *sorted(tmp_path.glob("coordinator.log.*[0-9]"))]
    lines = [line for f in files for line in f.read_text().splitlines()]
    assert len(lines) == 4000  # nothing lost
    assert all(line.endswith("x" * 40) and line.count(" line ") == 1 for line in lines)
    # Writers append without a lock, so a file may overshoot by one write per other writer
    # (a check-then-append race, or a write landing just after another process rotated).
    assert len(files) > 2 and all(f.stat().st_size <= 20_000 + 4 * 100 for f in files)
