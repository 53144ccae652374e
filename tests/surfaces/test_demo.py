"""``run_demo`` end to end: real instance processes, a real loopback fake provider, a real PNG."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from cross_instance.demo.run import run_demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(60)
def test_demo_end_to_end(tmp_path: Path) -> None:
    out = io.StringIO()
    result = run_demo(instances=2, duration=2.0, rpm=240, burst=4, out_dir=tmp_path,
                      progress=False, console=Console(file=out, width=120))
    assert [r.name for r in result.runs] == ["uncoordinated", "coordinated"]
    unco, coord = result.run("uncoordinated"), result.run("coordinated")
    # 2 instances x 2 threads flat out against 4 requests/s must overrun the provider
    assert unco.rate_limited > 0
    assert coord.rate_limited < unco.rate_limited and coord.rate_limited <= 2
    for run in (unco, coord):
        assert run.errors == 0
        assert run.requests == run.ok + run.rate_limited
        assert set(run.per_instance_ok) == {"instance-1", "instance-2"}
        assert sum(run.per_instance_ok.values()) == run.ok
        # never more than the provider admits in the window: burst + rate * duration
        assert 0 < run.ok <= 4 + 4 * 2.0
        assert run.wait_p50_ms <= run.wait_p99_ms
    assert result.chart_path == tmp_path / "demo.png"
    assert result.chart_path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["demo.png"]
    text = out.getvalue()
    assert "uncoordinated" in text and "coordinated:" in text and "demo.png" in text


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"instances": 0}, "instances"),
    ({"instances": 33}, "instances"),
    ({"duration": 0}, "duration"),
    ({"duration": 601}, "duration"),
    ({"rpm": 0}, "rpm"),
    ({"concurrency": 17}, "concurrency"),
    ({"burst": 0}, "burst"),
    ({"burst": 10_001}, "burst"),
])
def test_bad_argument_names_it(kwargs: dict[str, float], name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        run_demo(out_dir=tmp_path, progress=False, **kwargs)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())
