// @ts-check
/**
 * A small client of the pi-xi coordinator daemon (`pi-xi serve`) for Node 20 and later:
 * built-in `fetch`, no dependencies, no build step. Types for TypeScript are in `client.d.mts`
 * beside this file; the JSDoc below is checked against them with `tsc --checkJs`.
 *
 *   import { Coordinator } from "./client.mjs";
 *   const coord = Coordinator.fromEnv();               // PI_COORDINATOR_ADDR, _TOKEN(_FILE)
 *   await coord.register();                            // and heartbeats until close()
 *   const answer = await coord.withPermit("openai", { model: "gpt-4o" }, () => fetch(...));
 *   await coord.close();                               // unregister: frees what it held
 *
 * Promises:
 * - Every POST carries a fresh `X-Pi-Request-Id`; a POST that met a network error (or a
 *   retryable 5xx) is sent again with the SAME id, so the daemon applies it once.
 * - Errors are `CoordinatorError`s carrying the daemon's stable `code` (and `retryAfter`,
 *   seconds, on `RATE_LIMIT_EXCEEDED`, thrown as `RateLimitError`); a daemon that cannot be
 *   reached after the bounded retries is the retryable `store_unavailable`.
 * - Ids the daemon writes as integers wider than a JS number holds exactly (permit ids use 63
 *   bits) are read as decimal strings and written back as JSON integers: nothing is rounded.
 *   In a queue task's `payload`, `result` and `error` (the user's own JSON) such integers are
 *   `bigint`s, written back as JSON integers too; its clock fields are numbers.
 */

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import os from "node:os";

export const DEFAULT_ADDR = "127.0.0.1:8765";
const REQUEST_ID_HEADER = "x-pi-request-id";
const LONG_POLL_MARGIN_MS = 15_000; // a long-poll's reply may take its timeout plus this
const TASKS = /** @type {const} */ ({ wide: "bigint" }); // a task's JSON: wide integers exact
const INT_MARK = `@@pi-int-${randomUUID()}:`; // stands for a raw integer while serialising

// --- errors ----------------------------------------------------------------------------

/** An error answer of the daemon (or none at all: `store_unavailable`, `status` 0). */
export class CoordinatorError extends Error {
  /**
   * @param {string} message
   * @param {{code: string, status?: number, retryable?: boolean, retryAfter?: number,
   *          details?: Record<string, unknown>, cause?: unknown}} info
   */
  constructor(message, info) {
    super(message, info.cause === undefined ? undefined : { cause: info.cause });
    this.name = "CoordinatorError";
    /** The daemon's stable code (`RATE_LIMIT_EXCEEDED`, `stale_epoch`, `unauthorized`, ...). */
    this.code = info.code;
    /** The HTTP status (0 when no answer came). */
    this.status = info.status ?? 0;
    /** Whether the same request may succeed later. */
    this.retryable = info.retryable ?? false;
    /** Seconds to wait before trying again, when the daemon said (or `Retry-After` did). */
    this.retryAfter = info.retryAfter;
    /** The error body's other fields (`provider`, `currentEpoch`, `ownerInstanceId`, ...). */
    this.details = info.details ?? {};
  }
}

/** `RATE_LIMIT_EXCEEDED`: no permit within the wait asked for; `retryAfter` says when. */
export class RateLimitError extends CoordinatorError {
  /** @param {string} message @param {ConstructorParameters<typeof CoordinatorError>[1]} info */
  constructor(message, info) {
    super(message, info);
    this.name = "RateLimitError";
  }
}

/**
 * @param {number} status
 * @param {unknown} body
 * @param {string | null} retryAfterHeader
 * @returns {CoordinatorError}
 */
function errorFrom(status, body, retryAfterHeader) {
  const fields = body !== null && typeof body === "object" && !Array.isArray(body)
    ? /** @type {Record<string, unknown>} */ ({ ...body }) : {};
  const code = typeof fields.code === "string" ? fields.code : `http_${status}`;
  const message = typeof fields.message === "string" ? fields.message
    : `the coordinator answered HTTP ${status}`;
  let retryAfter = typeof fields.retryAfter === "number" ? fields.retryAfter : undefined;
  if (retryAfter === undefined && retryAfterHeader !== null && retryAfterHeader.trim() !== "") {
    const seconds = Number(retryAfterHeader);
    if (Number.isFinite(seconds)) retryAfter = seconds;
  }
  const retryable = typeof fields.retryable === "boolean" ? fields.retryable : status >= 500;
  for (const key of ["code", "message", "retryable", "retryAfter"]) delete fields[key];
  const info = { code, status, retryable, retryAfter, details: fields };
  return code === "RATE_LIMIT_EXCEEDED" ? new RateLimitError(message, info)
    : new CoordinatorError(message, info);
}

// --- JSON with integers wider than 2^53 -------------------------------------------------

// A string the daemon never sends (it refuses lone surrogates everywhere): marks a wide integer
// while parsing with `wide = "bigint"`.
const WIDE_MARK = "\ud800int:";

/**
 * `JSON.parse`, except that an integer a JS number cannot hold exactly becomes its decimal
 * string (the daemon's permit ids use 63 bits), or with `wide = "bigint"` a `bigint`.
 * @param {string} text
 * @param {"string" | "bigint"} [wide]
 * @returns {any}
 */
export function parseJson(text, wide = "string") {
  if (!/\d{16}/.test(text)) return JSON.parse(text);
  let out = "";
  let copied = 0;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') { // skip the string, escapes included
      i++;
      while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
      i++;
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      const start = i;
      i++;
      while (i < text.length && /[0-9eE.+-]/.test(text[i])) i++;
      const token = text.slice(start, i);
      if (/^-?\d{16,}$/.test(token) && !Number.isSafeInteger(Number(token))) {
        out += `${text.slice(copied, start)}"${wide === "bigint" ? "\\ud800int:" : ""}${token}"`;
        copied = i;
      }
    } else {
      i++;
    }
  }
  if (wide === "string") return JSON.parse(out + text.slice(copied));
  return JSON.parse(out + text.slice(copied), (_key, v) =>
    typeof v === "string" && v.startsWith(WIDE_MARK) ? BigInt(v.slice(WIDE_MARK.length)) : v);
}

/**
 * A task as the daemon sent it (parsed with wide integers as `bigint`s): its clock fields as
 * numbers (nanoseconds since the epoch exceed 2^53; as a number they are exact to a
 * microsecond), the user's JSON as it was.
 * @param {any} task
 * @returns {import("./client.d.mts").QueueTask}
 */
function taskFrom(task) {
  for (const key of ["leaseUntilNs", "enqueuedAt", "fence", "attempts", "maxAttempts",
                     "priority"]) {
    if (typeof task[key] === "bigint") task[key] = Number(task[key]);
  }
  return task;
}

/**
 * `JSON.stringify`, with `bigint`s written as JSON integers.
 * @param {unknown} value
 * @returns {string}
 */
export function stringifyJson(value) {
  const text = JSON.stringify(value, (_key, v) => typeof v === "bigint" ? INT_MARK + v : v);
  return text.includes(INT_MARK)
    ? text.replaceAll(new RegExp(`"${INT_MARK}(-?\\d+)"`, "g"), "$1") : text;
}

/** @param {string | number | bigint} id @param {string} what @returns {bigint} */
function wideInt(id, what) {
  if (typeof id === "bigint") return id;
  const text = String(id);
  if (!/^\d+$/.test(text)) throw new TypeError(`${what} must be a whole number (got ${id})`);
  return BigInt(text);
}

// --- server-sent events ---------------------------------------------------------------

/**
 * The server-sent events of a byte stream, as the HTML standard reads them: lines end with
 * CRLF, LF or CR; `data:` lines join with "\n"; `id:` sets the last event id; a blank line
 * ends an event; a line starting with ":" is a comment.
 */
export class EventStreamParser {
  constructor() {
    this.decoder = new TextDecoder("utf-8");
    this.buffer = "";
    this.afterCR = false;
    this.type = "";
    /** @type {string[]} */
    this.data = [];
    /** The id of the last event read (kept across events, as the standard says). */
    this.lastEventId = "";
    /** @type {number | undefined} The reconnection delay the server asked for (ms). */
    this.retryMs = undefined;
  }

  /**
   * The events completed by `chunk` (bytes or text).
   * @param {Uint8Array | string} chunk
   * @returns {import("./client.d.mts").ServerSentEvent[]}
   */
  push(chunk) {
    let text = typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true });
    if (this.afterCR && text.startsWith("\n")) text = text.slice(1); // CRLF split over chunks
    this.afterCR = false;
    this.buffer += text;
    /** @type {import("./client.d.mts").ServerSentEvent[]} */
    const events = [];
    const lineEnd = /\r\n|\r|\n/g;
    let start = 0;
    for (let m = lineEnd.exec(this.buffer); m !== null; m = lineEnd.exec(this.buffer)) {
      if (m[0] === "\r" && m.index === this.buffer.length - 1) this.afterCR = true;
      const event = this.line(this.buffer.slice(start, m.index));
      if (event !== null) events.push(event);
      start = m.index + m[0].length;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  /** @param {string} line @returns {import("./client.d.mts").ServerSentEvent | null} */
  line(line) {
    if (line === "") {
      if (this.data.length === 0) {
        this.type = "";
        return null;
      }
      const event = { type: this.type || "message", data: this.data.join("\n"),
                      lastEventId: this.lastEventId };
      this.type = "";
      this.data = [];
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
    return null;
  }
}

/**
 * A subscription to the daemon's event stream (`GET /v1/events`); see `Coordinator.subscribe`.
 */
export class Subscription {
  /**
   * @param {Coordinator} coordinator
   * @param {(event: import("./client.d.mts").CoordinatorEvent) => unknown} onEvent
   * @param {import("./client.d.mts").SubscribeOptions} options
   */
  constructor(coordinator, onEvent, options) {
    this.coordinator = coordinator;
    this.onEvent = onEvent;
    this.options = options;
    /** The id of the last event delivered: pass it as `lastEventId` to resume after it. */
    this.lastEventId = options.lastEventId === undefined || options.lastEventId === null
      ? undefined : String(options.lastEventId);
    /** How many events were delivered. */
    this.delivered = 0;
    this.controller = new AbortController();
    /** @type {Promise<void>} */
    this.closed = Promise.resolve();
  }

  /** Stop reading; no callback starts after this. */
  close() {
    this.controller.abort();
  }

  /** @returns {Promise<Response>} the open stream, or the daemon's error */
  async connect() {
    /** @type {Record<string, string>} */
    const headers = { accept: "text/event-stream" };
    if (this.lastEventId !== undefined) headers["last-event-id"] = this.lastEventId;
    const { kinds } = this.options;
    const query = kinds === undefined || kinds.length === 0 ? ""
      : `?kinds=${encodeURIComponent(kinds.join(","))}`;
    return this.coordinator.stream(`/v1/events${query}`, headers, this.controller.signal);
  }

  /** @param {Response} response */
  start(response) {
    this.closed = this.run(response);
    this.closed.catch(() => {}); // read by whoever awaits it; never an unhandled rejection
  }

  /** @param {Response} first */
  async run(first) {
    const { reconnect = true, onError } = this.options;
    /** @type {Response | null} */
    let response = first;
    let failures = 0;
    let retryMs = 1000;
    while (!this.controller.signal.aborted) {
      try {
        if (response === null) response = await this.connect();
        failures = 0;
        const parser = new EventStreamParser();
        if (response.body === null) throw new Error("the event stream has no body");
        for await (const chunk of response.body) {
          for (const sse of parser.push(chunk)) {
            if (this.controller.signal.aborted) return;
            if (sse.type === "overflow") { // dropped for reading too slowly: resume from its id
              if (sse.lastEventId !== "") this.lastEventId = sse.lastEventId;
              throw new CoordinatorError(`the daemon dropped this subscriber: ${sse.data}`,
                                         { code: "events_overflow", retryable: true });
            }
            await this.deliver(sse);
          }
          retryMs = parser.retryMs ?? retryMs; // the server's `retry:`
        }
        if (this.controller.signal.aborted) return;
        throw new CoordinatorError("the event stream ended", {
          code: "store_unavailable", retryable: true });
      } catch (err) {
        if (this.controller.signal.aborted) return;
        const error = err instanceof CoordinatorError ? err : new CoordinatorError(
          `the event stream broke: ${describe(err)}`,
          { code: "store_unavailable", retryable: true, cause: err });
        onError?.(error);
        if (!reconnect || !error.retryable) throw error; // ends it: `closed` rejects
        failures++;
        response = null;
        await sleep(Math.min(retryMs * 2 ** Math.min(failures - 1, 5), 30_000),
                    this.controller.signal);
      }
    }
  }

  /** @param {import("./client.d.mts").ServerSentEvent} sse */
  async deliver(sse) {
    /** @type {any} */
    let body = {};
    try {
      body = parseJson(sse.data);
    } catch {
      body = { data: sse.data };
    }
    if (body === null || typeof body !== "object") body = { data: body };
    const id = body.eventId ?? body.id ?? (sse.lastEventId === "" ? undefined : sse.lastEventId);
    const event = {
      eventId: id === undefined ? undefined : String(id),
      kind: typeof body.kind === "string" ? body.kind : sse.type,
      instanceId: body.instanceId ?? null,
      wallMs: typeof body.wallMs === "number" ? body.wallMs : undefined,
      data: body.data !== null && typeof body.data === "object" ? body.data : {},
    };
    if (sse.lastEventId !== "") this.lastEventId = sse.lastEventId;
    else if (event.eventId !== undefined) this.lastEventId = event.eventId;
    const { kinds } = this.options;
    if (kinds !== undefined && !kinds.includes(event.kind)) return;
    this.delivered++;
    try {
      await this.onEvent(event);
    } catch (err) { // a failing callback loses its event, never the subscription
      this.options.onError?.(err);
    }
  }
}

// --- the client -----------------------------------------------------------------------

/** @param {unknown} err @returns {string} */
function describe(err) {
  if (err instanceof Error) {
    const cause = /** @type {{cause?: unknown}} */ (err).cause;
    return cause instanceof Error ? `${err.message} (${cause.message})` : err.message;
  }
  return String(err);
}

/**
 * @param {number} ms
 * @param {AbortSignal} [signal]
 * @returns {Promise<void>}
 */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** @param {unknown} value @returns {value is Response} */
function isResponse(value) {
  return value !== null && typeof value === "object" && "status" in value && "headers" in value
    && typeof (/** @type {any} */ (value).headers?.forEach) === "function";
}

/** @param {import("./client.d.mts").HeaderInit | undefined} headers */
function plainHeaders(headers) {
  if (headers === undefined || headers === null) return undefined;
  /** @type {Record<string, string>} */
  const out = {};
  if (typeof (/** @type {any} */ (headers).forEach) === "function"
      && !Array.isArray(headers)) {
    /** @type {Headers} */ (headers).forEach((value, key) => { out[key.toLowerCase()] = value; });
  } else {
    for (const [key, value] of Array.isArray(headers) ? headers : Object.entries(headers)) {
      out[key.toLowerCase()] = String(value);
    }
  }
  return out;
}

/** @param {Record<string, unknown>} body */
function defined(body) {
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [key, value] of Object.entries(body)) if (value !== undefined) out[key] = value;
  return out;
}

/** @param {import("./client.d.mts").Permit | string | number | bigint} permit */
function permitIdOf(permit) {
  return typeof permit === "object" ? permit.permitId : permit;
}

export class Coordinator {
  /** @param {import("./client.d.mts").CoordinatorOptions} [options] */
  constructor(options = {}) {
    const addr = (options.addr ?? DEFAULT_ADDR).trim().replace(/\/+$/, "");
    /** Where the daemon is (`http://host:port`). */
    this.baseUrl = /^https?:\/\//.test(addr) ? addr : `http://${addr}`;
    this.token = options.token || undefined;
    this.retries = options.retries ?? 4;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.onHeartbeatError = options.onHeartbeatError;
    this.fetchImpl = options.fetch ?? globalThis.fetch;
    /** @type {string | undefined} This instance's id, once registered. */
    this.instanceId = undefined;
    /** @type {import("./client.d.mts").Registration | undefined} */
    this.registration = undefined;
    /** Heartbeats sent by the loop or by `heartbeat()`. */
    this.heartbeats = 0;
    /** @type {import("./client.d.mts").RegisterOptions} */
    this.registerOptions = {};
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.heartbeatTimer = undefined;
    this.heartbeatLoop = 0;
    /** @type {Set<Subscription>} */
    this.subscriptions = new Set();
    /** @type {WeakSet<object>} */
    this.reported = new WeakSet();
  }

  /**
   * A client of the daemon named by `PI_COORDINATOR_ADDR` (`host:port`, default
   * 127.0.0.1:8765) with the token of `PI_COORDINATOR_TOKEN` (or the first line of the file
   * `PI_COORDINATOR_TOKEN_FILE` names), as `pi-xi serve` reads them.
   * @param {import("./client.d.mts").CoordinatorOptions} [options]
   */
  static fromEnv(options = {}) {
    const env = process.env;
    let token = env.PI_COORDINATOR_TOKEN?.trim() || undefined;
    if (token === undefined && env.PI_COORDINATOR_TOKEN_FILE) {
      token = readFileSync(env.PI_COORDINATOR_TOKEN_FILE, "utf8").split(/\r?\n/, 1)[0].trim();
    }
    return new Coordinator({ addr: env.PI_COORDINATOR_ADDR || DEFAULT_ADDR, token, ...options });
  }

  // --- HTTP --------------------------------------------------------------------------

  /**
   * One request, retried on network errors and retryable 5xx answers (POSTs with the same
   * request id); the parsed JSON reply, or a `CoordinatorError`.
   * @param {"GET" | "POST"} method
   * @param {string} path
   * @param {unknown} [body]
   * @param {{timeoutMs?: number, signal?: AbortSignal, wide?: "string" | "bigint"}} [options]
   *   `wide`: how integers wider than a JS number are read (`parseJson`)
   * @returns {Promise<any>}
   */
  async request(method, path, body, options = {}) {
    /** @type {Record<string, string>} */
    const headers = { accept: "application/json" };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (method === "POST") {
      headers["content-type"] = "application/json";
      headers[REQUEST_ID_HEADER] = randomUUID(); // one id for every try of this request
    }
    const payload = body === undefined ? undefined : stringifyJson(body);
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
    for (let attempt = 0; ; attempt++) {
      const timeout = AbortSignal.timeout(timeoutMs);
      const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
      let status;
      let text;
      let retryAfter;
      try {
        const response = await this.fetchImpl(this.baseUrl + path,
                                              { method, headers, body: payload, signal });
        status = response.status;
        retryAfter = response.headers.get("retry-after");
        text = await response.text();
      } catch (err) {
        if (options.signal?.aborted) throw options.signal.reason ?? err; // the caller's abort
        if (attempt < this.retries) {
          await sleep(backoffMs(attempt));
          continue;
        }
        throw new CoordinatorError(`cannot reach the coordinator at ${this.baseUrl} (${method} `
          + `${path}, ${attempt + 1} tries): ${describe(err)}`,
          { code: "store_unavailable", retryable: true, cause: err });
      }
      /** @type {unknown} */
      let data = null;
      try {
        data = text === "" ? null : parseJson(text, options.wide);
      } catch {
        data = null;
      }
      if (status >= 200 && status < 300) return data;
      const error = errorFrom(status, data, retryAfter);
      if (status >= 500 && error.retryable && attempt < this.retries) {
        await sleep(backoffMs(attempt));
        continue;
      }
      throw error;
    }
  }

  /**
   * Open a streaming GET (the event stream): the response once its headers came.
   * @param {string} path
   * @param {Record<string, string>} headers
   * @param {AbortSignal} signal
   * @returns {Promise<Response>}
   */
  async stream(path, headers, signal) {
    const all = { ...headers };
    if (this.token) all.authorization = `Bearer ${this.token}`;
    let response;
    try {
      response = await this.fetchImpl(this.baseUrl + path, { method: "GET", headers: all, signal });
    } catch (err) {
      if (signal.aborted) throw err;
      throw new CoordinatorError(`cannot reach the coordinator at ${this.baseUrl} (GET ${path}): `
        + describe(err), { code: "store_unavailable", retryable: true, cause: err });
    }
    if (response.ok) return response;
    const text = await response.text().catch(() => "");
    let data = null;
    try {
      data = parseJson(text);
    } catch {
      data = null;
    }
    throw errorFrom(response.status, data, response.headers.get("retry-after"));
  }

  /** @returns {string} */
  #requireInstance() {
    if (this.instanceId === undefined) {
      throw new CoordinatorError("register() first: this client has no instance yet",
                                 { code: "not_registered" });
    }
    return this.instanceId;
  }

  // --- instances -------------------------------------------------------------------

  /**
   * Register this process (the daemon chooses the id when none is given) and, unless
   * `heartbeat: false`, keep its lease with heartbeats until `close()`/`unregister()`.
   * @param {import("./client.d.mts").RegisterOptions} [options]
   * @returns {Promise<import("./client.d.mts").Registration>}
   */
  async register(options = {}) {
    this.registerOptions = options;
    const reply = await this.#sendRegister(options);
    if (options.heartbeat !== false) this.startHeartbeats();
    return reply;
  }

  /**
   * @param {import("./client.d.mts").RegisterOptions} options
   * @returns {Promise<import("./client.d.mts").Registration>}
   */
  async #sendRegister(options) {
    const reply = await this.request("POST", "/v1/instances/register", defined({
      instanceId: options.instanceId ?? this.instanceId,
      sessionId: options.sessionId,
      pid: options.pid ?? process.pid,
      host: options.host ?? os.hostname(),
      cwd: options.cwd ?? process.cwd(),
      leaseMs: options.leaseMs,
    }));
    this.instanceId = reply.instanceId;
    this.registration = reply;
    return reply;
  }

  /**
   * Renew the lease now. `not_registered` when the daemon judged the instance dead (its
   * permits are gone); the heartbeat loop then registers again on its own.
   * @param {import("./client.d.mts").Workload} [workload]
   * @returns {Promise<{ok: boolean}>}
   */
  async heartbeat(workload = {}) {
    const reply = await this.request("POST", "/v1/instances/heartbeat", defined({
      instanceId: this.#requireInstance(), ...workload }));
    this.heartbeats++;
    return reply;
  }

  /** Heartbeat every `heartbeatIntervalMs` the daemon gave (the timer does not keep Node up). */
  startHeartbeats() {
    this.stopHeartbeats();
    const loop = ++this.heartbeatLoop; // a loop ends when another starts or stop is called
    const every = this.registration?.heartbeatIntervalMs ?? 2000;
    const beat = async () => {
      try {
        await this.heartbeat(this.registerOptions.workload?.() ?? {});
      } catch (err) {
        this.onHeartbeatError?.(err);
        if (err instanceof CoordinatorError && err.code === "not_registered") {
          try { // judged dead (its permits are gone): the same id again
            await this.#sendRegister(this.registerOptions);
          } catch (again) {
            this.onHeartbeatError?.(again);
          }
        }
      }
      if (loop === this.heartbeatLoop) schedule();
    };
    const schedule = () => {
      this.heartbeatTimer = setTimeout(beat, every);
      this.heartbeatTimer.unref();
    };
    schedule();
  }

  stopHeartbeats() {
    this.heartbeatLoop++;
    if (this.heartbeatTimer !== undefined) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  /** Stop heartbeats and remove the instance: everything it held is freed. Idempotent. */
  async unregister() {
    this.stopHeartbeats();
    if (this.instanceId === undefined) return;
    await this.request("POST", "/v1/instances/unregister", { instanceId: this.instanceId });
  }

  /** Close every subscription, stop heartbeats, unregister. */
  async close() {
    for (const sub of this.subscriptions) sub.close();
    this.subscriptions.clear();
    await this.unregister();
  }

  // --- permits ----------------------------------------------------------------------

  /**
   * Wait (at most `timeoutMs`, default 30 s) for a permit for one call to `provider`;
   * `RateLimitError` (with `retryAfter`, seconds) when none came in time.
   * @param {string} provider
   * @param {import("./client.d.mts").AcquireOptions} [options]
   * @returns {Promise<import("./client.d.mts").Permit>}
   */
  async acquire(provider, options = {}) {
    const timeoutMs = options.timeoutMs ?? 30_000;
    const reply = await this.request("POST", "/v1/permits/acquire", defined({
      instanceId: this.#requireInstance(), provider, model: options.model,
      tokens: options.tokens, timeoutMs,
      release: options.release?.map((p) => wideInt(permitIdOf(p), "release")),
    }), { timeoutMs: timeoutMs + LONG_POLL_MARGIN_MS, signal: options.signal });
    return { ...reply, permitId: String(reply.permitId) };
  }

  /**
   * What the call made under `permit` met: HTTP `status`, the response `headers` (rate-limit
   * headers, `retry-after`), `usageTokens` used. A 429 is shared with every instance at
   * once. `true` when the daemon knew the permit.
   * @param {import("./client.d.mts").Permit} permit
   * @param {import("./client.d.mts").ReportOptions} outcome
   * @returns {Promise<boolean>}
   */
  async report(permit, outcome) {
    this.reported.add(permit);
    const reply = await this.request("POST", "/v1/permits/report", defined({
      instanceId: this.#requireInstance(), permitId: wideInt(permit.permitId, "permitId"),
      status: outcome.status, headers: plainHeaders(outcome.headers),
      usageTokens: outcome.usageTokens, body: outcome.body,
    }));
    return reply.applied;
  }

  /**
   * Free permits (a permit, its id, or a list of them): how many this instance still held.
   * @param {import("./client.d.mts").PermitRef | import("./client.d.mts").PermitRef[]} permits
   * @returns {Promise<number>}
   */
  async release(permits) {
    const list = Array.isArray(permits) ? permits : [permits];
    if (list.length === 0) return 0;
    const reply = await this.request("POST", "/v1/permits/release", {
      instanceId: this.#requireInstance(),
      permitIds: list.map((p) => wideInt(permitIdOf(p), "permitId")) });
    return reply.released;
  }

  /**
   * `fn(permit)` under a permit, released afterwards whatever happens. When `fn` returns a
   * fetch `Response` and did not report, its status and headers are reported.
   * @template T
   * @param {string} provider
   * @param {import("./client.d.mts").AcquireOptions} options
   * @param {(permit: import("./client.d.mts").Permit) => T | Promise<T>} fn
   * @returns {Promise<T>}
   */
  async withPermit(provider, options, fn) {
    const permit = await this.acquire(provider, options);
    let failed = false;
    try {
      const result = await fn(permit);
      if (!this.reported.has(permit) && isResponse(result)) {
        await this.report(permit, { status: result.status, headers: result.headers });
      }
      return result;
    } catch (err) {
      failed = true;
      throw err;
    } finally {
      try {
        await this.release(permit);
      } catch (err) {
        if (!failed) throw err; // never hide fn's own error behind the release's
      }
    }
  }

  // --- the provider gateway -----------------------------------------------------------

  /**
   * The base URL of `provider` through the daemon's gateway, for any HTTP client or SDK
   * (`fetch`, the `openai` and `@anthropic-ai/sdk` packages): `<daemon>/<provider>/v1`, or
   * `<daemon>/anthropic` for Anthropic's SDK, which adds `/v1` itself.
   * @param {string} provider
   * @param {{ sdkAddsVersion?: boolean }} [options]
   */
  gatewayBaseUrl(provider, options = {}) {
    const root = `${this.baseUrl}/${encodeURIComponent(provider)}`;
    return options.sdkAddsVersion ? root : `${root}/v1`;
  }

  /**
   * Headers that make a gateway request this instance's (`X-Pi-Instance-Id`, so its
   * priority and reservation apply) and pass the daemon's token (`X-Pi-Token`; the
   * `Authorization` header stays the provider's, with the caller's own API key).
   * @returns {Record<string, string>}
   */
  gatewayHeaders() {
    /** @type {Record<string, string>} */
    const headers = {};
    if (this.instanceId) headers["X-Pi-Instance-Id"] = this.instanceId;
    if (this.token) headers["X-Pi-Token"] = this.token;
    return headers;
  }

  // --- views ------------------------------------------------------------------------

  /** What `pi-xi status --json` prints. @returns {Promise<Record<string, any>>} */
  status() {
    return this.request("GET", "/v1/status");
  }

  /** What `pi-xi limits --json` prints. @param {string} [provider] */
  limits(provider) {
    const query = provider === undefined ? "" : `?provider=${encodeURIComponent(provider)}`;
    return this.request("GET", `/v1/limits${query}`);
  }

  // --- workflows --------------------------------------------------------------------

  /**
   * Claim a workflow (a dead owner's is taken when `autoClaim`, the default); `force`
   * `"dead"` or `"live"` force-claims. The `epoch` fences every later state write.
   * `workflow_owned_by_other` (409) when a live instance owns it.
   * @param {string} workflowId
   * @param {import("./client.d.mts").ClaimOptions} [options]
   * @returns {Promise<import("./client.d.mts").WorkflowClaim>}
   */
  claimWorkflow(workflowId, options = {}) {
    return this.request("POST", "/v1/workflows/claim", defined({
      instanceId: this.#requireInstance(), workflowId, autoClaim: options.autoClaim,
      force: options.force }));
  }

  /**
   * The original coordinator's check (claims a free or dead-owned workflow when `autoClaim`).
   * @param {string} workflowId
   * @param {{autoClaim?: boolean}} [options]
   * @returns {Promise<Record<string, any>>}
   */
  checkWorkflow(workflowId, options = {}) {
    return this.request("POST", "/v1/workflows/check", defined({
      instanceId: this.#requireInstance(), workflowId, autoClaim: options.autoClaim }));
  }

  /** @param {string} workflowId @returns {Promise<boolean>} */
  async releaseWorkflow(workflowId) {
    const reply = await this.request("POST", "/v1/workflows/release", {
      instanceId: this.#requireInstance(), workflowId });
    return reply.released;
  }

  /**
   * A fenced write: applied only while this instance owns the workflow at `claim.epoch`,
   * else `stale_epoch` (409).
   * @param {{workflowId: string, epoch: number}} claim
   * @param {Record<string, unknown>} values
   * @returns {Promise<void>}
   */
  async writeWorkflowState(claim, values) {
    await this.request("POST", "/v1/workflows/state/write", {
      instanceId: this.#requireInstance(), workflowId: claim.workflowId, epoch: claim.epoch,
      values });
  }

  /** @param {string} workflowId @returns {Promise<Record<string, any>>} */
  async readWorkflowState(workflowId) {
    const reply = await this.request("POST", "/v1/workflows/state/read", { workflowId });
    return reply.values;
  }

  /** @returns {Promise<import("./client.d.mts").WorkflowRecord[]>} */
  async listWorkflows() {
    return (await this.request("GET", "/v1/workflows")).workflows;
  }

  // --- locks ------------------------------------------------------------------------

  /**
   * A TTL lock with a fencing `token`: waits in arrival order for at most `timeoutMs`
   * (`lock_timeout`, 408, after it); with `wait: false`, `null` when someone holds it.
   * @param {string} resource
   * @param {import("./client.d.mts").LockOptions} [options]
   * @returns {Promise<import("./client.d.mts").Lock | null>}
   */
  async acquireLock(resource, options = {}) {
    const waitMs = options.wait === false ? 0 : options.timeoutMs ?? 300_000;
    const reply = await this.request("POST", "/v1/locks/acquire", defined({
      instanceId: this.#requireInstance(), resource, ttlMs: options.ttlMs,
      timeoutMs: options.timeoutMs, wait: options.wait,
    }), { timeoutMs: waitMs + LONG_POLL_MARGIN_MS, signal: options.signal });
    return reply.lock;
  }

  /**
   * Extend the lock's TTL from now; `lock_lost` (409) when it expired or went to another.
   * @param {import("./client.d.mts").Lock} lock
   * @param {{ttlMs?: number}} [options]
   * @returns {Promise<import("./client.d.mts").Lock>}
   */
  async renewLock(lock, options = {}) {
    const reply = await this.request("POST", "/v1/locks/renew", defined({
      resource: lock.resource, lockId: lock.lockId, ttlMs: options.ttlMs }));
    return reply.lock;
  }

  /** @param {import("./client.d.mts").Lock} lock @returns {Promise<boolean>} */
  async releaseLock(lock) {
    const reply = await this.request("POST", "/v1/locks/release", {
      resource: lock.resource, lockId: lock.lockId });
    return reply.released;
  }

  // --- the work queue ---------------------------------------------------------------

  /**
   * Queue `payload` (any JSON value) on this instance's queue. A `taskId` the store holds
   * already is not queued again (a resent put).
   * @param {unknown} payload
   * @param {import("./client.d.mts").PutOptions} [options]
   * @returns {Promise<import("./client.d.mts").QueueTask>}
   */
  async putTask(payload, options = {}) {
    const reply = await this.request("POST", "/v1/queue/put", defined({
      instanceId: this.#requireInstance(), payload, toolName: options.toolName,
      priority: options.priority, taskId: options.taskId, maxAttempts: options.maxAttempts }),
    TASKS);
    return taskFrom(reply.task);
  }

  /**
   * Start the next task of this instance's queue (or the shared pool) under a lease of
   * `leaseMs`: `null` when there is none. Renew it (`renewTask`) every third of the lease.
   * @param {{leaseMs?: number}} [options]
   * @returns {Promise<import("./client.d.mts").QueueTask | null>}
   */
  async takeTask(options = {}) {
    const reply = await this.request("POST", "/v1/queue/take", defined({
      instanceId: this.#requireInstance(), leaseMs: options.leaseMs }), TASKS);
    return reply.task === null ? null : taskFrom(reply.task);
  }

  /**
   * Move the best queued task of the busiest instance (more than `minQueued` queued) here
   * and start it: `null` when none is that busy. A running task is never stolen.
   * @param {{leaseMs?: number, minQueued?: number}} [options]
   * @returns {Promise<import("./client.d.mts").QueueTask | null>}
   */
  async stealTask(options = {}) {
    const reply = await this.request("POST", "/v1/queue/steal", defined({
      instanceId: this.#requireInstance(), leaseMs: options.leaseMs,
      minQueued: options.minQueued }), TASKS);
    return reply.task === null ? null : taskFrom(reply.task);
  }

  /**
   * Extend the run's lease from now; `task_lost` (409) once the run is over.
   * @param {import("./client.d.mts").QueueTask} task
   * @param {{leaseMs?: number}} [options]
   * @returns {Promise<import("./client.d.mts").QueueTask>}
   */
  async renewTask(task, options = {}) {
    const reply = await this.request("POST", "/v1/queue/renew", defined({
      taskId: task.taskId, fence: task.fence, leaseMs: options.leaseMs }), TASKS);
    return taskFrom(reply.task);
  }

  /**
   * The run holding `task.fence` is done with `result`; `task_lost` (409) when it no longer
   * holds the task (its lease ran out: another run may have it).
   * @param {import("./client.d.mts").QueueTask} task
   * @param {unknown} [result]
   * @returns {Promise<import("./client.d.mts").QueueTask>}
   */
  async completeTask(task, result = null) {
    const reply = await this.request("POST", "/v1/queue/complete", {
      taskId: task.taskId, fence: task.fence, result }, TASKS);
    return taskFrom(reply.task);
  }

  /**
   * The run failed with `error`: the task fails, or with `retry` goes back to the queue while
   * it has attempts left; `task_lost` (409) as for `completeTask`.
   * @param {import("./client.d.mts").QueueTask} task
   * @param {unknown} error
   * @param {{retry?: boolean}} [options]
   * @returns {Promise<import("./client.d.mts").QueueTask>}
   */
  async failTask(task, error, options = {}) {
    const reply = await this.request("POST", "/v1/queue/fail", defined({
      taskId: task.taskId, fence: task.fence, error, retry: options.retry }), TASKS);
    return taskFrom(reply.task);
  }

  /**
   * Tasks (of `owner`, `""` being the shared pool; in `state`), at most `limit`.
   * @param {{owner?: string, state?: string, limit?: number}} [options]
   * @returns {Promise<import("./client.d.mts").QueueTask[]>}
   */
  async listTasks(options = {}) {
    const query = new URLSearchParams(defined({
      owner: options.owner, state: options.state,
      limit: options.limit === undefined ? undefined : String(options.limit) }));
    const text = query.toString();
    const reply = await this.request("GET", `/v1/queue/tasks${text ? `?${text}` : ""}`,
      undefined, TASKS);
    return reply.tasks.map(taskFrom);
  }

  /** Per instance: queued, running, done, failed and stealing; `stealing`: the total. */
  queueStats() {
    return this.request("GET", "/v1/queue/stats");
  }


  /**
   * Follow the daemon's event stream (`GET /v1/events`, server-sent events): `onEvent` is
   * called for each event in the log's order, one at a time (a promise it returns is
   * awaited). Resolves once the stream is open (rejects with the daemon's error, e.g.
   * `not_found` or `unauthorized`); then reconnects on its own after a broken stream,
   * resuming after the last event delivered (`Last-Event-ID`).
   * @param {(event: import("./client.d.mts").CoordinatorEvent) => unknown} onEvent
   * @param {import("./client.d.mts").SubscribeOptions} [options]
   * @returns {Promise<Subscription>}
   */
  async subscribe(onEvent, options = {}) {
    const sub = new Subscription(this, onEvent, options);
    const response = await sub.connect();
    sub.start(response);
    this.subscriptions.add(sub);
    sub.closed.finally(() => this.subscriptions.delete(sub)).catch(() => {});
    return sub;
  }
}

/** @param {number} attempt */
function backoffMs(attempt) {
  return Math.min(100 * 2 ** attempt, 2000) * (0.5 + Math.random() / 2);
}
