"""A gateway client process for the multi-process tests: ``python -m tests.gateway.clients
burst URL N`` sends N chat completions one after another on one keep-alive connection and
prints the statuses it got as JSON; ``... stream URL`` starts one long streamed completion,
prints ``streaming`` once its first bytes arrived, and reads until it is killed."""

from __future__ import annotations

import json
import sys
from collections import Counter

import httpx

KEY = "sk-gateway-test-0123456789abcdef"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def burst(url: str, count: int) -> None:
    statuses: Counter[int] = Counter()
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        print("ready", flush=True)
        sys.stdin.readline()  # go
        for _ in range(count):
            statuses[client.post(url, json=CHAT).status_code] += 1
    print(json.dumps({str(k): v for k, v in statuses.items()}), flush=True)


def stream(url: str) -> None:
    body = {**CHAT, "stream": True, "max_tokens": 40}
    headers = {"Authorization": f"Bearer {KEY}", "x-fake-latency-ms": "60000",
               "X-Pi-Instance-Id": "streaming-client"}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=120) as reply:
        print("streaming", reply.status_code, flush=True)
        for _ in reply.iter_raw():
            pass


if __name__ == "__main__":
    if sys.argv[1] == "burst":
        burst(sys.argv[2], int(sys.argv[3]))
    else:
        stream(sys.argv[2])
