"""The Node client in ``examples/node-client`` (issue 16, item 8): ``node demo.mjs`` against a
REAL ``pi-xi serve`` in a process of its own (without a token, and with one on both sides), the
demo's JSON lines, and what the daemon holds afterwards; the client's own promises (a POST
retried with the same request id, 63-bit ids kept exact, typed errors, the event-stream parser
and its resume) against a small fake server in Node; and ``client.d.mts`` declaring what
``client.mjs`` exports. Skipped only when ``node`` is not installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "examples" / "node-client"
NODE = shutil.which("node")
TOKEN = "node-client-test-token-0123456789"
WORKFLOW = "node-demo-workflow"

pytestmark = pytest.mark.skipif(
    NODE is None, reason="`node` is not installed: the Node client example needs Node 20+")


# --- a real daemon ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pi_xi() -> list[str]:
    script = Path(sys.executable).with_name("pi-xi")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cross_instance.cli.app import main; main()"]


def _env(home: Path, **extra: str) -> dict[str, str]:
    """The environment without the caller's coordinator settings (``PI_*`` but the host-facts
    switch, ``DEMO_*``), HOME in the test's directory, and ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PI_", "DEMO_")) or k.startswith("PI_XI_")}
    env.update(HOME=str(home), **extra)
    return env


def _get(addr: str, path: str, token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://{addr}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


class Daemon:
    """``pi-xi serve --port <free port>``, cwd, HOME and PI_RUNTIME_DIR in ``workdir``."""

    def __init__(self, workdir: Path, token: str | None) -> None:
        self.workdir = workdir
        self.token = token
        self.env = _env(workdir, PI_RUNTIME_DIR=str(workdir / "state"),
                        **({"PI_COORDINATOR_TOKEN": token} if token else {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.addr = ""

    def start(self) -> Daemon:
        for _ in range(3):  # a free port may be taken before the daemon binds it
            port = _free_port()
            self.addr = f"127.0.0.1:{port}"
            with open(self.workdir / "serve.err", "wb") as err:
                self.proc = subprocess.Popen([*_pi_xi(), "serve", "--port", str(port)],
                                             cwd=self.workdir, env=self.env,
                                             stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + 30
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    if _get(self.addr, "/v1/health", None)[0] == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            self.stop()
            if "already in use" not in (self.workdir / "serve.err").read_text():
                break
        raise RuntimeError(f"pi-xi serve did not become healthy: "
                           f"{(self.workdir / 'serve.err').read_text()[-2000:]}")

    def get(self, path: str) -> tuple[int, Any]:
        return _get(self.addr, path, self.token)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _node(args: list[str], env: dict[str, str], cwd: Path,
          timeout: float = 30) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run([NODE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# --- the demo against the daemon, one per variant ---------------------------------------------
@dataclass
class DemoRun:
    token: str | None
    instance_id: str
    lines: list[dict[str, Any]]
    steps: dict[str, dict[str, Any]]
    status: dict[str, Any]
    workflows: dict[str, Any]
    limits: dict[str, Any]
    locks: dict[str, Any]
    events_route: int
    without_token: tuple[int, Any] | None = None
    wrong_token: list[dict[str, Any]] = field(default_factory=list)
    wrong_token_rc: int | None = None
    status_after_wrong: dict[str, Any] = field(default_factory=dict)


def _events_status(addr: str, token: str | None) -> int:
    """The status ``GET /v1/events`` answers (the headers only; the stream is not read)."""
    request = urllib.request.Request(f"http://{addr}/v1/events")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return err.code


def run_demo(workdir: Path, variant: str) -> DemoRun:
    """The daemon started, ``node demo.mjs`` run against it, what the daemon holds after."""
    token = TOKEN if variant == "token" else None
    daemon = Daemon(workdir, token).start()
    try:
        instance_id = f"node-{variant}-{os.getpid()}"
        env = _env(workdir, PI_COORDINATOR_ADDR=daemon.addr, PI_INSTANCE_ID=instance_id,
                   DEMO_WORKFLOW=WORKFLOW, **({"PI_COORDINATOR_TOKEN": token} if token else {}))
        done = _node(["demo.mjs"], env, CLIENT_DIR)
        assert done.returncode == 0, f"demo.mjs failed:\n{done.stdout}\n{done.stderr}"
        lines = _lines(done.stdout)
        steps = {line["step"]: line for line in lines if line["step"] != "event"}
        run = DemoRun(
            token=token, instance_id=instance_id, lines=lines, steps=steps,
            status=daemon.get("/v1/status")[1], workflows=daemon.get("/v1/workflows")[1],
            limits=daemon.get("/v1/limits?provider=openai")[1],
            locks=daemon.get("/v1/locks")[1],
            events_route=_events_status(daemon.addr, token))
        if token:
            run.without_token = _get(daemon.addr, "/v1/status", None)
            wrong = _node(["demo.mjs"], {**env, "PI_COORDINATOR_TOKEN": "x" * 20,
                                         "PI_INSTANCE_ID": f"{instance_id}-wrong"}, CLIENT_DIR)
            run.wrong_token_rc = wrong.returncode
            run.wrong_token = _lines(wrong.stdout)
            run.status_after_wrong = daemon.get("/v1/status")[1]
        return run
    finally:
        daemon.stop()


@pytest.mark.parametrize("variant", ["open", "token"])
def test_demo_against_a_real_daemon(tmp_path: Path, variant: str) -> None:
    """One daemon per variant (token: ``PI_COORDINATOR_TOKEN`` on both sides); the events part
    is skipped only when the daemon answers ``GET /v1/events`` with 404."""
    demo = run_demo(tmp_path, variant)
    check_steps(demo)
    check_daemon_state(demo)
    check_token(demo)
    check_events(demo)  # last: it skips when the daemon has no event stream


def check_steps(demo: DemoRun) -> None:
    s = demo.steps
    assert list(s)[-1] == "done", demo.lines
    assert s["register"]["instanceId"] == demo.instance_id
    assert s["register"]["token"] is bool(demo.token)
    assert s["heartbeat"]["ok"] is True
    # the loop beat on its own too, at the interval the daemon gave (at most a third of the lease)
    assert 0 < s["register"]["heartbeatIntervalMs"] <= s["register"]["leaseMs"] // 3
    assert s["heartbeats"]["count"] >= 2 and s["heartbeats"]["loop"] is True
    # a permit: its 63-bit id exact (a decimal string), reported, released once
    permit = s["acquire"]
    assert re.fullmatch(r"[1-9]\d*", permit["permitId"])
    assert permit["provider"] == "openai" and permit["model"] == "demo-model"
    assert permit["usage"] >= 1 and permit["limit"] == 500
    assert s["report"] == {"step": "report", "permitId": permit["permitId"], "status": 200,
                           "applied": True}
    assert s["release"]["released"] == 1 and s["release"]["releasedAgain"] == 0
    # a 429 with retry-after reported under withPermit: the next permit is refused, typed
    assert s["report_429"]["applied"] is True
    assert s["report_429"]["permitId"] != permit["permitId"]
    refused = s["rate_limited"]
    assert refused["refused"] is True and refused["code"] == "RATE_LIMIT_EXCEEDED"
    assert refused["status"] == 429 and refused["retryable"] is True
    assert 20 < refused["retryAfter"] <= 31  # the 30 s the 429's retry-after said
    # the workflow: claimed at epoch 1, state written and read back, a stale epoch refused
    assert s["claim"] == {"step": "claim", "workflowId": WORKFLOW, "epoch": 1,
                          "action": "claimed"}
    assert s["read_state"]["values"] == s["write_state"]["values"] == {
        "step": "drafted", "by": demo.instance_id, "items": [1, 2, 3]}
    stale = s["stale_write"]
    assert stale["refused"] is True and stale["code"] == "stale_epoch"
    assert stale["status"] == 409 and stale["details"]["currentEpoch"] == 1
    assert s["lock"]["holder"] == demo.instance_id and s["lock"]["released"] is True
    assert s["lock"]["token"] >= 1
    assert s["unregister"] == {"step": "unregister", "ok": True, "instanceId": demo.instance_id}


def check_daemon_state(demo: DemoRun) -> None:
    # unregistered: no instance, no permit held, no lock
    assert demo.instance_id not in [i["instanceId"] for i in demo.status["instances"]]
    assert demo.status["concurrency"]["inUse"] == 0
    assert demo.locks == {"locks": []}
    # the workflow stays with the node instance at epoch 1 (a dead owner's: claimable)
    [wf] = [w for w in demo.workflows["workflows"] if w["workflowId"] == WORKFLOW]
    assert wf["ownerInstanceId"] == demo.instance_id and wf["epoch"] == 1
    # the 429's retry-after is a cooldown every instance sees
    openai = demo.limits["providers"]["openai"]["effective"]
    assert openai["cooldownRemainingS"] > 15
    assert demo.status["providers"]["openai"]["cooldownRemainingS"] > 15


def check_token(demo: DemoRun) -> None:
    if demo.token is None:
        assert demo.steps["register"]["token"] is False
        return
    status, body = demo.without_token or (0, None)
    assert status == 401 and body["code"] == "unauthorized"
    # a wrong token: the typed error, nothing registered
    assert demo.wrong_token_rc == 1
    [error] = demo.wrong_token
    assert error["step"] == "error" and error["at"] == "register"
    assert error["code"] == "unauthorized" and error["status"] == 401
    assert error["retryable"] is False
    assert f"{demo.instance_id}-wrong" not in [i["instanceId"]
                                               for i in demo.status_after_wrong["instances"]]


def check_events(demo: DemoRun) -> None:
    if demo.events_route == 404:
        assert demo.steps["subscribe"]["ok"] is False
        assert demo.steps["subscribe"]["code"] == "not_found"
        pytest.skip("GET /v1/events answers 404: this daemon has no event stream yet")
    assert demo.events_route == 200
    events = [line for line in demo.lines if line["step"] == "event"]
    assert demo.steps["subscribe"]["ok"] is True
    assert demo.steps["subscribe"]["events"] == len(events)
    ids = [int(e["eventId"]) for e in events]
    assert ids == sorted(set(ids)) and ids[0] >= 1  # from the oldest kept, in order, once
    mine = [e for e in events if e["instanceId"] == demo.instance_id]
    assert [e["kind"] for e in mine][:1] == ["instance_up"]
    claimed = [e for e in mine if e["kind"] == "workflow_claimed"]
    assert claimed and claimed[0]["data"]["workflow"] == WORKFLOW
    assert claimed[0]["data"]["epoch"] == 1
    assert demo.steps["subscribe"]["sawClaim"] is True
    # resumed after the first event: the stream starts with the one after it
    resume = demo.steps["resume"]
    assert resume["after"] == events[0]["eventId"]
    assert resume["firstEventId"] == resume["expected"] == events[1]["eventId"]


# --- the client's own promises, against a fake server in Node ------------------------------
FAKE = r"""
import http from "node:http";
const { Coordinator, CoordinatorError, RateLimitError, EventStreamParser, parseJson,
        stringifyJson } = await import(process.env.CLIENT_URL);
const out = {};

out.parsed = parseJson('{"a":12345678901234567890,"b":"q\\"12345678901234567890",'
                       + '"c":[1.5e300,-9007199254740993,42,9007199254740991]}');
out.text = stringifyJson({ x: 9223372036854775806n, s: "9223372036854775806" });

const parser = new EventStreamParser();
const bytes = new TextEncoder().encode("data: caf\u00e9\n\n");
out.sse = [
  ...parser.push("id: 1\r"), ...parser.push("\nevent: a\ndata: {\"x\":"),
  ...parser.push("1}\n\n: a comment\n\ndata: l1\ndata:l2\n\n"),
  ...parser.push("retry: 50\nid: 3\nevent: b\ndata: {}\r"), ...parser.push("\r"),
  ...parser.push(bytes.slice(0, 9)), ...parser.push(bytes.slice(9)),
];
out.retryMs = parser.retryMs;

const seen = [];
const tries = { register: 0, acquire: 0, events: 0 };
const server = http.createServer(async (req, res) => {
  let body = "";
  for await (const chunk of req) body += chunk;
  seen.push({ method: req.method, url: req.url, body,
              id: req.headers["x-pi-request-id"] ?? null,
              auth: req.headers.authorization ?? null,
              lastEventId: req.headers["last-event-id"] ?? null });
  const reply = (status, data) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(typeof data === "string" ? data : JSON.stringify(data));
  };
  if (req.url === "/v1/instances/register") {
    if (++tries.register === 1) return void req.socket.destroy(); // the reply is lost
    return reply(200, { instanceId: "fake-1", leaseMs: 10000, heartbeatIntervalMs: 60000,
                        priority: 1, reservedCapacity: 0 });
  }
  if (req.url === "/v1/permits/acquire") {
    if (++tries.acquire === 1) {
      return reply(503, { code: "store_unavailable", message: "away", retryable: true });
    }
    if (tries.acquire === 2) {
      return reply(200, '{"permitId":9223372036854775806,"instanceId":"fake-1","provider":'
                        + '"p","model":null,"tokens":0,"usage":1,"limit":5,"waitedMs":1.5}');
    }
    return reply(429, { code: "RATE_LIMIT_EXCEEDED", message: "wait", retryable: true,
                        provider: "p", model: null, retryAfter: 2.5, reason: "cooldown" });
  }
  if (req.url === "/v1/permits/release") return reply(200, { released: 1 });
  if (req.url.startsWith("/v1/events")) {
    res.writeHead(200, { "content-type": "text/event-stream" });
    const event = (id, kind) => `id: ${id}\nevent: ${kind}\ndata: ${JSON.stringify({
      eventId: id, kind, instanceId: "fake-1", wallMs: id, data: { n: id } })}\n\n`;
    if (++tries.events === 1) return void res.end(`retry: 10\n\n${event(1, "instance_up")}`);
    return void res.write(`: keep-alive\n\n${event(2, "workflow_claimed")}`); // stays open
  }
  reply(404, { code: "not_found", message: "Not Found", retryable: false });
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const addr = `127.0.0.1:${server.address().port}`;

const coord = new Coordinator({ addr, token: "fake-token-0123456789" });
await coord.register({ heartbeat: false });
const permit = await coord.acquire("p", { timeoutMs: 100 });
out.permitId = permit.permitId;
try {
  await coord.acquire("p", { timeoutMs: 100 });
} catch (e) {
  out.limited = { rate: e instanceof RateLimitError, base: e instanceof CoordinatorError,
                  code: e.code, status: e.status, retryAfter: e.retryAfter,
                  retryable: e.retryable, details: e.details };
}
out.released = await coord.release(permit);
try {
  await coord.status();
} catch (e) {
  out.notFound = { code: e.code, status: e.status, base: e instanceof CoordinatorError };
}

const events = [];
let streamErrors = 0;
let twoSeen;
const two = new Promise((resolve) => {
  const timer = setTimeout(resolve, 5000);
  twoSeen = () => { clearTimeout(timer); resolve(); };
});
const sub = await coord.subscribe((e) => { events.push(e); if (events.length === 2) twoSeen(); },
                                  { lastEventId: 0, onError: () => { streamErrors++; } });
await two;
sub.close();
await sub.closed;
out.events = events;
out.subLastEventId = sub.lastEventId;
out.streamErrors = streamErrors;

server.closeAllConnections();
await new Promise((resolve) => server.close(resolve));
try {
  await new Coordinator({ addr, retries: 1 }).status();
} catch (e) {
  out.unreachable = { code: e.code, status: e.status, retryable: e.retryable };
}
out.seen = seen;
console.log(JSON.stringify(out));
"""


def test_client_against_a_fake_server(tmp_path: Path) -> None:
    env = _env(tmp_path, CLIENT_URL=(CLIENT_DIR / "client.mjs").as_uri())
    done = _node(["--input-type=module", "-e", FAKE], env, tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    # JSON: integers past 2^53 kept exact as strings, and written back as integers
    assert out["parsed"] == {"a": "12345678901234567890", "b": 'q"12345678901234567890',
                             "c": [1.5e300, "-9007199254740993", 42, 9007199254740991]}
    assert out["text"] == '{"x":9223372036854775806,"s":"9223372036854775806"}'
    # SSE: CRLF split over chunks, comments, multi-line data, a lone CR, UTF-8 split
    assert out["sse"] == [
        {"type": "a", "data": '{"x":1}', "lastEventId": "1"},
        {"type": "message", "data": "l1\nl2", "lastEventId": "1"},
        {"type": "b", "data": "{}", "lastEventId": "3"},
        {"type": "message", "data": "café", "lastEventId": "3"}]
    assert out["retryMs"] == 50

    seen = out["seen"]
    assert all(s["auth"] == "Bearer fake-token-0123456789" for s in seen)
    # a lost reply: the POST sent again with the same request id
    register = [s for s in seen if s["url"] == "/v1/instances/register"]
    assert len(register) == 2 and register[0]["id"] == register[1]["id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", register[0]["id"])
    # a retryable 503: again with the same id; a new call: a fresh id; a 429: not retried
    acquire = [s for s in seen if s["url"] == "/v1/permits/acquire"]
    assert len(acquire) == 3
    assert acquire[0]["id"] == acquire[1]["id"] != acquire[2]["id"]
    assert len({s["id"] for s in seen if s["method"] == "POST"}) == len(
        [s for s in seen if s["method"] == "POST"]) - 2
    assert out["permitId"] == "9223372036854775806"
    [release] = [s for s in seen if s["url"] == "/v1/permits/release"]
    assert '"permitIds":[9223372036854775806]' in release["body"]
    assert out["released"] == 1
    assert out["limited"] == {"rate": True, "base": True, "code": "RATE_LIMIT_EXCEEDED",
                              "status": 429, "retryAfter": 2.5, "retryable": True,
                              "details": {"provider": "p", "model": None,
                                          "reason": "cooldown"}}
    assert out["notFound"] == {"code": "not_found", "status": 404, "base": True}
    assert out["unreachable"] == {"code": "store_unavailable", "status": 0, "retryable": True}
    # events: from 0, the stream ended, reconnected after the last id delivered
    assert [(e["eventId"], e["kind"], e["data"]) for e in out["events"]] == [
        ("1", "instance_up", {"n": 1}), ("2", "workflow_claimed", {"n": 2})]
    assert out["subLastEventId"] == "2" and out["streamErrors"] == 1
    streams = [s for s in seen if s["url"] == "/v1/events"]
    assert [s["lastEventId"] for s in streams] == ["0", "1"]


def test_types_declare_what_the_client_exports(tmp_path: Path) -> None:
    """``client.d.mts`` is kept by hand: every runtime export and every ``Coordinator``
    method is declared there, and nothing declared is missing at run time."""
    script = ("const m = await import(process.env.CLIENT_URL);"
              "console.log(JSON.stringify({exports: Object.keys(m),"
              " methods: Object.getOwnPropertyNames(m.Coordinator.prototype),"
              " statics: Object.getOwnPropertyNames(m.Coordinator)}));")
    env = _env(tmp_path, CLIENT_URL=(CLIENT_DIR / "client.mjs").as_uri())
    done = _node(["--input-type=module", "-e", script], env, tmp_path)
    assert done.returncode == 0, done.stderr
    runtime = json.loads(done.stdout)
    types = (CLIENT_DIR / "client.d.mts").read_text()
    declared = set(re.findall(r"^export declare (?:class|function|const) (\w+)", types, re.M))
    assert declared == set(runtime["exports"])
    body = types.split("export declare class Coordinator {", 1)[1].split("\n}\n", 1)[0]
    methods = set(re.findall(r"^  (?:static )?(\w+)(?:<[^>]*>)?\(", body, re.M))
    statics = set(re.findall(r"^  static (\w+)", body, re.M))
    assert statics <= set(runtime["statics"])
    assert methods - statics - {"constructor"} <= set(runtime["methods"])
    assert set(runtime["methods"]) - {"constructor"} <= methods, (
        "a public method of Coordinator is not declared in client.d.mts")
