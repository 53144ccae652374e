// The Node client against a running `pi-xi serve`, one JSON line per step:
//
//   PI_COORDINATOR_ADDR=127.0.0.1:8765 [PI_COORDINATOR_TOKEN=...] node demo.mjs
//
// Registers, heartbeats (by hand and from the loop), takes a permit, reports its answer, releases
// it; reports a 429 with retry-after (the cooldown is shared: the next permit is refused with
// RATE_LIMIT_EXCEEDED and its retryAfter); claims a workflow, writes its state (and shows a stale
// epoch refused); takes and frees a lock; reads the event stream from the oldest event kept and
// resumes it after an event; unregisters. Exits 1 after an `{"step": "error"}` line on anything
// unexpected.
//
// Optional: PI_INSTANCE_ID (default node-demo-<pid>), DEMO_PROVIDER (default openai),
// DEMO_WORKFLOW (default node-demo-workflow), DEMO_RETRY_AFTER_S (default 30).

import { Coordinator, CoordinatorError, RateLimitError } from "./client.mjs";

const provider = process.env.DEMO_PROVIDER || "openai";
const workflowId = process.env.DEMO_WORKFLOW || "node-demo-workflow";
const retryAfterS = process.env.DEMO_RETRY_AFTER_S || "30";
const instanceId = process.env.PI_INSTANCE_ID || `node-demo-${process.pid}`;

/** @param {string} step @param {Record<string, unknown>} [fields] */
function say(step, fields = {}) {
  process.stdout.write(`${JSON.stringify({ step, ...fields })}\n`);
}

/** @param {unknown} err */
function errorFields(err) {
  if (err instanceof CoordinatorError) {
    return { code: err.code, status: err.status, retryable: err.retryable,
             retryAfter: err.retryAfter, message: err.message };
  }
  return { code: "client_error", message: String(err) };
}

/**
 * Resolves once `until()` holds after an event (or after `ms`), collecting the events seen.
 * @param {Coordinator} coord
 * @param {import("./client.mjs").SubscribeOptions} options
 * @param {(seen: import("./client.mjs").CoordinatorEvent[]) => boolean} until
 * @param {number} ms
 */
async function follow(coord, options, until, ms) {
  /** @type {import("./client.mjs").CoordinatorEvent[]} */
  const seen = [];
  /** @type {() => void} */
  let done = () => {};
  const finished = new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    done = () => {
      clearTimeout(timer);
      resolve(undefined);
    };
  });
  const sub = await coord.subscribe((event) => {
    seen.push(event);
    if (until(seen)) done();
  }, options);
  await finished;
  sub.close();
  return seen;
}

let at = "start";
const coord = Coordinator.fromEnv({
  onHeartbeatError: (err) => say("heartbeat_error", errorFields(err)),
});

try {
  at = "register";
  // a 3 s lease: the daemon asks for a heartbeat every second, so the loop shows up soon
  const reg = await coord.register({ instanceId, sessionId: "node-demo", leaseMs: 3000 });
  say("register", { instanceId: reg.instanceId, leaseMs: reg.leaseMs,
                    heartbeatIntervalMs: reg.heartbeatIntervalMs, addr: coord.baseUrl,
                    token: Boolean(process.env.PI_COORDINATOR_TOKEN
                                   || process.env.PI_COORDINATOR_TOKEN_FILE) });

  at = "heartbeat";
  const beat = await coord.heartbeat({ pendingTasks: 1, activeOrchestrations: 1 });
  say("heartbeat", { ok: beat.ok });

  at = "acquire";
  const permit = await coord.acquire(provider, { model: "demo-model", tokens: 50,
                                                 timeoutMs: 10_000 });
  say("acquire", { permitId: permit.permitId, provider: permit.provider, model: permit.model,
                   usage: permit.usage, limit: permit.limit, waitedMs: permit.waitedMs });

  at = "report";
  const applied = await coord.report(permit, { status: 200, usageTokens: 42,
                                               headers: { "content-type": "application/json" } });
  say("report", { permitId: permit.permitId, status: 200, applied });

  at = "release";
  const released = await coord.release(permit);
  const again = await coord.release(permit); // twice: counts 0, changes nothing
  say("release", { permitId: permit.permitId, released, releasedAgain: again });

  at = "report_429";
  const outcome = await coord.withPermit(provider, { model: "demo-model", timeoutMs: 10_000 },
    async (p) => ({ permitId: p.permitId, applied: await coord.report(p, {
      status: 429, headers: new Headers({ "Retry-After": retryAfterS }) }) }));
  say("report_429", { ...outcome, status: 429, retryAfterHeader: retryAfterS });

  at = "rate_limited";
  try {
    const p = await coord.acquire(provider, { model: "demo-model", timeoutMs: 300 });
    await coord.release(p);
    say("rate_limited", { refused: false, permitId: p.permitId });
  } catch (err) {
    if (!(err instanceof RateLimitError)) throw err;
    say("rate_limited", { refused: true, ...errorFields(err) });
  }

  at = "claim";
  const claim = await coord.claimWorkflow(workflowId);
  say("claim", { workflowId: claim.workflowId, epoch: claim.epoch, action: claim.action });

  at = "write_state";
  const values = { step: "drafted", by: instanceId, items: [1, 2, 3] };
  await coord.writeWorkflowState(claim, values);
  say("write_state", { workflowId, epoch: claim.epoch, values });

  at = "read_state";
  say("read_state", { workflowId, values: await coord.readWorkflowState(workflowId) });

  at = "stale_write";
  try {
    await coord.writeWorkflowState({ workflowId, epoch: claim.epoch - 1 }, { step: "stale" });
    say("stale_write", { refused: false });
  } catch (err) {
    if (!(err instanceof CoordinatorError)) throw err;
    say("stale_write", { refused: true, ...errorFields(err), details: err.details });
  }

  at = "lock";
  const lock = await coord.acquireLock(`${workflowId}/lock`, { ttlMs: 5000, timeoutMs: 2000 });
  if (lock === null) throw new Error("a waiting lock acquire answered null");
  const lockReleased = await coord.releaseLock(lock);
  say("lock", { resource: lock.resource, token: lock.token, holder: lock.holder,
                released: lockReleased });

  at = "subscribe";
  try {
    const mine = (/** @type {import("./client.mjs").CoordinatorEvent} */ e) =>
      e.kind === "workflow_claimed" && (e.data.workflow ?? e.data.workflowId) === workflowId;
    const seen = await follow(coord, { lastEventId: 0 }, (all) => all.some(mine), 5000);
    for (const e of seen) {
      say("event", { eventId: e.eventId, kind: e.kind, instanceId: e.instanceId,
                     wallMs: e.wallMs, data: e.data });
    }
    say("subscribe", { ok: true, events: seen.length, kinds: [...new Set(seen.map((e) => e.kind))],
                       sawClaim: seen.some(mine) });

    at = "resume";
    const first = seen[0];
    if (first !== undefined && seen.length > 1) {
      const resumed = await follow(coord, { lastEventId: first.eventId }, () => true, 5000);
      say("resume", { after: first.eventId, firstEventId: resumed[0]?.eventId ?? null,
                      expected: seen[1].eventId });
    }
  } catch (err) {
    if (!(err instanceof CoordinatorError) || err.code !== "not_found") throw err;
    say("subscribe", { ok: false, ...errorFields(err) }); // a daemon without the event stream
  }

  at = "heartbeats";
  const deadline = Date.now() + reg.heartbeatIntervalMs + 5000;
  while (coord.heartbeats < 2 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  say("heartbeats", { count: coord.heartbeats, loop: coord.heartbeats >= 2 });

  at = "unregister";
  await coord.close();
  say("unregister", { ok: true, instanceId });
  say("done");
} catch (err) {
  say("error", { at, ...errorFields(err) });
  process.exitCode = 1;
  await coord.close().catch(() => {}); // free what it held, if the daemon still answers
}
