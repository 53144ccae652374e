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
    assert coord.failed == 0  # nothing reaches the application as an error
    for run in (unco, coord):
        assert run.errors == 0
        assert run.requests == run.ok + run.rate_limited
        assert run.calls == run.ok + run.failed  # every SDK call ends answered or failed
        assert run.latency_p50_ms <= run.latency_p99_ms
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
    assert "failed after the SDK's retries" in text


def test_the_coordinated_instances_leave_one_token_of_the_providers_burst():
    from cross_instance.demo.run import configured_burst

    assert [configured_burst(b) for b in (1, 2, 10, 100)] == [1, 1, 9, 99]


def test_the_sdk_retry_model_is_the_openai_sdks_default():
    import httpx

    from cross_instance.demo.worker import SdkRetries

    sdk = SdkRetries()
    assert sdk.wait_s(0, httpx.Headers({"retry-after-ms": "250", "retry-after": "1"})) == 0.25
    assert sdk.wait_s(1, httpx.Headers({"retry-after": "3"})) == 3.0
    assert sdk.wait_s(0, httpx.Headers({"retry-after": "121"})) is None  # too long: no retry
    assert sdk.wait_s(2, httpx.Headers({"retry-after": "1"})) is None  # two retries, then fail
    for retry, full in ((0, 0.5), (1, 1.0)):  # no usable hint: backoff less up to 25 % jitter
        for headers in ({}, {"retry-after": "0"}, {"retry-after": "soon"}):
            wait = sdk.wait_s(retry, httpx.Headers(headers))
            assert wait is not None and 0.75 * full <= wait <= full
    assert SdkRetries(max_retries=5).wait_s(4, httpx.Headers()) <= 8.0  # capped


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


def test_the_sdk_retry_model_matches_the_installed_openai_sdk():
    constants = pytest.importorskip("openai._constants")
    from cross_instance.demo.worker import SdkRetries

    sdk = SdkRetries()
    assert (sdk.max_retries, sdk.initial_s, sdk.max_backoff_s, sdk.honour_up_to_s) == (
        constants.DEFAULT_MAX_RETRIES, constants.INITIAL_RETRY_DELAY,
        constants.MAX_RETRY_DELAY, constants.MAX_RETRY_AFTER_DELAY)


@pytest.mark.timeout(60)
def test_the_demo_runs_without_matplotlib_and_names_the_extra(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """matplotlib is in the ``demo`` extra: without it the runs and the table still come,
    and the demo says which extra draws the chart."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = io.StringIO()
    result = run_demo(instances=1, duration=1.0, rpm=240, burst=4, out_dir=tmp_path,
                      progress=False, console=Console(file=out, width=120))
    assert result.chart_path is None and list(tmp_path.iterdir()) == []
    assert result.run("coordinated").ok > 0
    text = out.getvalue()
    assert "pi-cross-instance[demo]" in text and "chart: not drawn" in text
