"""The fake provider over real loopback sockets (httpx): limits, headers, streams, stats, CLI."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from cross_instance.testing.fakeprovider import FakeProvider, parse_openai_duration
from cross_instance.testing.fakeprovider.responses import REPLY_TEXT

OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"
MSGS = [{"role": "user", "content": "hi"}]
OA_BODY: dict[str, Any] = {"model": "gpt-fake", "messages": MSGS}
AN_BODY: dict[str, Any] = {"model": "claude-fake", "max_tokens": 64, "messages": MSGS}


def post(fake: FakeProvider, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(fake.url + path, json=body, headers=headers, timeout=10)


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeProvider]:
    kwargs = getattr(request, "param", {})
    with FakeProvider(**kwargs) as provider:
        yield provider


@pytest.mark.parametrize("fake", [{"requests_per_minute": 6, "burst": 5}], indirect=True)
def test_burst_passes_then_429_with_retry_after(fake: FakeProvider) -> None:
    assert [post(fake, OPENAI, OA_BODY).status_code for _ in range(5)] == [200] * 5
    r = post(fake, OPENAI, OA_BODY)
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 10
    assert 0 < int(r.headers["retry-after-ms"]) <= 10_000
    err = r.json()["error"]
    assert (err["type"], err["param"], err["code"]) == ("requests", None, "rate_limit_exceeded")
    assert err["message"]
    r = post(fake, ANTHROPIC, AN_BODY)
    assert r.status_code == 429 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("fake", [{"requests_per_minute": 6, "burst": 1, "retry_after": False}],
                         indirect=True)
def test_retry_after_can_be_switched_off(fake: FakeProvider) -> None:
    assert post(fake, OPENAI, OA_BODY).status_code == 200
    r = post(fake, OPENAI, OA_BODY)
    assert r.status_code == 429
    assert "retry-after" not in r.headers and "retry-after-ms" not in r.headers


@pytest.mark.parametrize("fake", [{"requests_per_minute": 1200, "burst": 5}], indirect=True)
def test_saturated_interval_admits_at_most_burst_plus_rate(fake: FakeProvider) -> None:
    stop_at = time.monotonic() + 0.6

    def hammer(cid: str) -> None:
        with httpx.Client(base_url=fake.url, headers={"x-client-id": cid}) as client:
            while time.monotonic() < stop_at:
                client.post(OPENAI, json=OA_BODY)

    started = time.monotonic()
    threads = [threading.Thread(target=hammer, args=(f"c{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    stats = fake.stats(events=True)
    ok_times = sorted(t for t, _, status in stats["events"] if status == 200)
    interval = 50_000_000  # 60 s / 1200
    assert len(ok_times) <= 5 + wall / 0.05
    for i in range(len(ok_times)):  # every window [t_i, t_j] obeys the GCRA bound
        for j in range(i, len(ok_times)):
            assert (j - i + 1 - 5) * interval <= ok_times[j] - ok_times[i]
    assert len(ok_times) > 5  # the bucket refilled while saturated
    assert stats["rate_limited"] > 0 and len(stats["by_client"]) == 8


@pytest.mark.parametrize("fake", [{"requests_per_minute": 60, "burst": 3,
                                   "tokens_per_minute": 10_000}], indirect=True)
def test_openai_headers(fake: FakeProvider) -> None:
    first = post(fake, OPENAI, OA_BODY, **{"x-fake-tokens": "100"})
    h = first.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("60", "2")
    assert h["x-ratelimit-reset-requests"] == "1s"
    assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == ("10000", "9900")
    assert h["x-ratelimit-reset-tokens"] == "600ms"
    second = post(fake, OPENAI, OA_BODY, **{"x-fake-tokens": "100"}).headers
    assert second["x-ratelimit-remaining-requests"] == "1"
    assert 1_000_000_000 < parse_openai_duration(second["x-ratelimit-reset-requests"]) <= 2 * 10**9
    post(fake, OPENAI, OA_BODY)
    limited = post(fake, OPENAI, OA_BODY)
    assert limited.status_code == 429
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert parse_openai_duration(limited.headers["x-ratelimit-reset-requests"]) <= 3 * 10**9


@pytest.mark.parametrize("fake", [{"requests_per_minute": 60, "burst": 3, "tokens_per_minute": 600,
                                   "header_style": "anthropic"}], indirect=True)
def test_anthropic_headers(fake: FakeProvider) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    remaining = []
    for _ in range(3):
        h = post(fake, ANTHROPIC, AN_BODY).headers
        assert h["anthropic-ratelimit-requests-limit"] == "60"
        remaining.append(int(h["anthropic-ratelimit-requests-remaining"]))
        reset = datetime.fromisoformat(h["anthropic-ratelimit-requests-reset"])
        assert before <= reset and (reset - before).total_seconds() <= 5
        for kind in ("tokens", "input-tokens", "output-tokens"):
            assert h[f"anthropic-ratelimit-{kind}-limit"] == "600"
            assert int(h[f"anthropic-ratelimit-{kind}-remaining"]) < 600
            datetime.fromisoformat(h[f"anthropic-ratelimit-{kind}-reset"])
    assert remaining == [2, 1, 0]
    limited = post(fake, ANTHROPIC, AN_BODY)
    assert limited.status_code == 429 and "retry-after-ms" not in limited.headers
    assert int(limited.headers["retry-after"]) >= 1


@pytest.mark.parametrize("fake", [{"requests_per_minute": 6, "burst": 1, "header_style": "none",
                                   "tokens_per_minute": 1000}], indirect=True)
def test_header_style_none_sends_no_ratelimit_headers(fake: FakeProvider) -> None:
    for r in (post(fake, OPENAI, OA_BODY), post(fake, ANTHROPIC, AN_BODY)):
        assert not [k for k in r.headers if "ratelimit" in k.lower()]
    assert r.status_code == 429 and "retry-after" in r.headers


def sse_frames(fake: FakeProvider, path: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """(event name, data) pairs of a streamed answer."""
    frames: list[tuple[str, str]] = []
    event = ""
    with httpx.stream("POST", fake.url + path, json=body, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                frames.append((event, line[len("data: "):]))
                event = ""
    return frames


def test_openai_stream(fake: FakeProvider) -> None:
    body = {**OA_BODY, "stream": True, "stream_options": {"include_usage": True}}
    frames = sse_frames(fake, OPENAI, body)
    assert frames[-1] == ("", "[DONE]")
    chunks = [json.loads(data) for _, data in frames[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == REPLY_TEXT
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["total_tokens"] > 0 and chunks[-1]["choices"] == []


def test_anthropic_stream(fake: FakeProvider) -> None:
    frames = sse_frames(fake, ANTHROPIC, {**AN_BODY, "max_tokens": 4, "stream": True})
    names = [name for name, _ in frames]
    assert names == ["message_start", "content_block_start"] + ["content_block_delta"] * 4 + [
        "content_block_stop", "message_delta", "message_stop"]
    datas = [json.loads(d) for _, d in frames]
    assert [d["type"] for d in datas] == names
    assert datas[0]["message"]["usage"]["input_tokens"] == 1
    assert datas[-2]["delta"]["stop_reason"] == "max_tokens"
    assert datas[-2]["usage"]["output_tokens"] == 4


@pytest.mark.parametrize("fake", [{"latency_s": 0.3}], indirect=True)
def test_stream_spreads_latency_and_clients_do_not_block(fake: FakeProvider) -> None:
    arrivals: list[float] = []
    start = time.monotonic()
    with httpx.stream("POST", fake.url + OPENAI, json={**OA_BODY, "stream": True}) as r:
        for _ in r.iter_lines():
            arrivals.append(time.monotonic() - start)
    assert arrivals[-1] >= 0.29 and arrivals[-1] - arrivals[0] >= 0.15
    results: list[int] = []
    start = time.monotonic()
    threads = [threading.Thread(target=lambda: results.append(post(fake, OPENAI, OA_BODY)
                                                              .status_code)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # overlapping, not queued: one after another would take 8 * 0.3 s
    assert results == [200] * 8 and time.monotonic() - start < 2.0


def test_keep_alive_reuses_the_connection(fake: FakeProvider) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    socks = []
    for _ in range(3):
        conn.request("POST", OPENAI, body=json.dumps(OA_BODY),
                     headers={"content-type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["object"] == "chat.completion"
        socks.append(conn.sock)
    conn.close()
    assert socks[0] is socks[1] is socks[2]


def test_non_stream_bodies(fake: FakeProvider) -> None:
    oa = post(fake, OPENAI, {**OA_BODY, "max_tokens": 100}).json()
    assert oa["object"] == "chat.completion" and oa["model"] == "gpt-fake"
    choice = oa["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": REPLY_TEXT, "refusal": None}
    assert (choice["index"], choice["finish_reason"], choice["logprobs"]) == (0, "stop", None)
    usage = oa["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    an = post(fake, ANTHROPIC, AN_BODY).json()
    assert (an["type"], an["role"], an["stop_reason"], an["stop_sequence"]) == (
        "message", "assistant", "end_turn", None)
    assert an["content"] == [{"type": "text", "text": REPLY_TEXT}]
    assert set(an["usage"]) == {"input_tokens", "output_tokens"}


def test_bad_requests_and_unknown_paths(fake: FakeProvider) -> None:
    r = httpx.post(fake.url + OPENAI, content=b"{not json", headers={"x-client-id": "bad"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(fake.url + ANTHROPIC, content=b"[1,", headers={"x-client-id": "bad"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = post(fake, ANTHROPIC, {"model": "m", "messages": MSGS})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    assert post(fake, OPENAI, OA_BODY, **{"x-fake-tokens": "-3"}).status_code == 400
    r = post(fake, "/v1/nope", {})
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert "error" in r.json() and httpx.get(fake.url + "/nope").status_code == 404
    assert fake.stats()["by_client"]["bad"]["bad_request"] == 2


def test_stats_per_client_and_reset(fake: FakeProvider) -> None:
    for cid, n in (("alpha", 3), ("beta", 2)):
        for _ in range(n):
            assert post(fake, OPENAI, OA_BODY, **{"x-client-id": cid}).status_code == 200
    post(fake, ANTHROPIC, AN_BODY)
    stats = httpx.get(fake.url + "/stats").json()
    assert (stats["requests"], stats["ok"], stats["rate_limited"]) == (6, 6, 0)
    assert stats["by_client"]["alpha"]["ok"] == 3 and stats["by_client"]["beta"]["ok"] == 2
    assert stats["by_client"]["anonymous"]["ok"] == 1 and "events" not in stats
    events = httpx.get(fake.url + "/stats?events=1").json()["events"]
    assert [e[1] for e in events] == ["alpha"] * 3 + ["beta"] * 2 + ["anonymous"]
    assert all(e[2] == 200 for e in events) and events == sorted(events, key=lambda e: e[0])
    assert httpx.post(fake.url + "/reset").status_code == 200
    assert fake.stats(events=True)["events"] == [] and fake.stats()["requests"] == 0
    post(fake, OPENAI, OA_BODY)
    fake.reset_stats()
    assert fake.stats()["ok"] == 0


@pytest.mark.parametrize("fake", [{"requests_per_minute": 600, "burst": 10}], indirect=True)
def test_set_limit_takes_effect(fake: FakeProvider) -> None:
    fake.set_limit(requests_per_minute=6, burst=2)
    assert [post(fake, OPENAI, OA_BODY).status_code for _ in range(3)] == [200, 200, 429]
    fake.set_limit(requests_per_minute=600_000, burst=5)
    time.sleep(0.01)
    assert [post(fake, OPENAI, OA_BODY).status_code for _ in range(5)] == [200] * 5
    fake.set_limit(tokens_per_minute=100)
    assert post(fake, OPENAI, OA_BODY, **{"x-fake-tokens": "101"}).status_code == 429
    assert fake.stats()["limits"]["tokens_per_minute"] == 100


@pytest.mark.parametrize("fake", [{"requests_per_minute": 6, "tokens_per_minute": 1000}],
                         indirect=True)
def test_tokens_per_minute_rejects_big_requests(fake: FakeProvider) -> None:
    big = {**OA_BODY, "messages": [{"role": "user", "content": "x" * 4000}], "max_tokens": 10}
    r = post(fake, OPENAI, big)  # 1000 + 10 tokens: can never fit a 1000-token bucket
    assert r.status_code == 429 and "retry-after" not in r.headers
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    ok = post(fake, OPENAI, OA_BODY, **{"x-fake-tokens": "600"})
    assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining-tokens"] == "400"
    r = post(fake, OPENAI, OA_BODY, **{"x-fake-tokens": "600"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) == 12  # 200 tokens at 60 ms
    assert r.headers["x-ratelimit-remaining-requests"] == "9"  # rejections did not charge


def test_cli_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cross_instance.testing.fakeprovider", "--port", "0", "--rpm", "600",
         "--burst", "10", "--latency", "0.01", "--headers", "anthropic"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        r = httpx.post(url + ANTHROPIC, json=AN_BODY, timeout=5)
        assert r.status_code == 200 and "anthropic-ratelimit-requests-limit" in r.headers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("args", [["--rpm", "0"], ["--headers", "xml"], ["--latency", "2,1"],
                                  ["--host", "0.0.0.0"]])
def test_cli_rejects_bad_arguments(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "cross_instance.testing.fakeprovider", *args],
                          check=False, capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
