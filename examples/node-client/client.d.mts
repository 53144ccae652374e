// Types of client.mjs (the pi-xi coordinator's Node client) for TypeScript programs.
// Kept by hand beside the JavaScript (a `.d.mts`: TypeScript reads the types of `client.mjs`
// from it); README.md, "Types", says how they are checked.

/** Where the daemon listens when `PI_COORDINATOR_ADDR` is not set. */
export declare const DEFAULT_ADDR: string;

/** What the daemon's error codes are; any other string may come from a newer daemon. */
export type ErrorCode =
  | "RATE_LIMIT_EXCEEDED" | "workflow_owned_by_other" | "stale_epoch" | "lock_timeout"
  | "lock_lost" | "task_lost" | "not_registered" | "invalid_request" | "unauthorized" | "not_found"
  | "store_unavailable" | "request_too_large" | (string & {});

export interface ErrorInfo {
  code: ErrorCode;
  status?: number;
  retryable?: boolean;
  retryAfter?: number;
  details?: Record<string, unknown>;
  cause?: unknown;
}

/** An error answer of the daemon (or none at all: `store_unavailable` with `status` 0). */
export declare class CoordinatorError extends Error {
  constructor(message: string, info: ErrorInfo);
  /** The daemon's stable code. */
  readonly code: ErrorCode;
  /** The HTTP status (0 when no answer came). */
  readonly status: number;
  /** Whether the same request may succeed later. */
  readonly retryable: boolean;
  /** Seconds to wait before trying again, when the daemon said. */
  readonly retryAfter: number | undefined;
  /** The error body's other fields (`provider`, `currentEpoch`, `ownerInstanceId`, ...). */
  readonly details: Record<string, unknown>;
}

/** `RATE_LIMIT_EXCEEDED`: no permit within the wait asked for; `retryAfter` says when. */
export declare class RateLimitError extends CoordinatorError {}

export interface CoordinatorOptions {
  /** `host:port` or `http://host:port` (default 127.0.0.1:8765). */
  addr?: string;
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** Tries after the first on a network error or a retryable 5xx (default 4). */
  retries?: number;
  /** Per request, long-polls excepted (default 30 000). */
  requestTimeoutMs?: number;
  /** Told of every failed heartbeat of the loop (the loop goes on). */
  onHeartbeatError?: (error: unknown) => void;
  /** A `fetch` of your own (default: the global one). */
  fetch?: typeof fetch;
}

export interface Workload {
  pendingTasks?: number;
  avgLatencyMs?: number;
  activeOrchestrations?: number;
}

export interface RegisterOptions {
  /** 1-128 of `A-Z a-z 0-9 . _ : @ -`; the daemon chooses one when absent. */
  instanceId?: string;
  sessionId?: string;
  pid?: number;
  host?: string;
  cwd?: string;
  /** How long the instance lives without a heartbeat (default: the daemon's timeout). */
  leaseMs?: number;
  /** Keep the lease with a heartbeat loop (default true). */
  heartbeat?: boolean;
  /** What each heartbeat of the loop reports. */
  workload?: () => Workload;
}

export interface Registration {
  instanceId: string;
  leaseMs: number;
  heartbeatIntervalMs: number;
  priority: number;
  reservedCapacity: number;
}

/** A permit's id, as a decimal string (ids use 63 bits: more than a JS number holds). */
export type PermitId = string;

export interface Permit {
  permitId: PermitId;
  instanceId: string;
  provider: string;
  model: string | null;
  tokens: number;
  usage: number;
  limit: number;
  waitedMs: number;
}

/** A permit, or its id. */
export type PermitRef = Permit | PermitId | bigint;

export interface AcquireOptions {
  model?: string;
  /** Tokens the call will use (counted when the provider has a tokens-per-minute limit). */
  tokens?: number;
  /** Longest wait (default 30 000, at most 300 000). */
  timeoutMs?: number;
  /** Permits to free first, in the same step. */
  release?: PermitRef[];
  /** Give up waiting (the daemon gives the place in line back). */
  signal?: AbortSignal;
}

export type HeaderInit = Headers | Record<string, string> | [string, string][];

export interface ReportOptions {
  /** The provider's HTTP status (429 starts a cooldown shared by every instance). */
  status?: number;
  /** The provider's response headers (rate-limit headers, `retry-after`). */
  headers?: HeaderInit;
  /** Tokens the call actually used. */
  usageTokens?: number;
  /** The response body (some providers say the wait there). */
  body?: string;
}

export interface ClaimOptions {
  /** Take a dead owner's workflow (default true). */
  autoClaim?: boolean;
  /** Force-claim: from a dead owner only, or from a live one too. */
  force?: "no" | "dead" | "live";
}

export interface WorkflowClaim {
  workflowId: string;
  /** Fences every state write. */
  epoch: number;
  action: string;
}

export interface WorkflowRecord {
  workflowId: string;
  epoch: number;
  ownerInstanceId: string | null;
  claimedAt: number;
  updatedAt: number;
}

export interface PutOptions {
  toolName?: string;
  /** -1000..1000, higher runs first. */
  priority?: number;
  /** A put sent again with the same id queues once. */
  taskId?: string;
  maxAttempts?: number;
}

/** A task of the shared work queue, as `GET /v1/queue/tasks` shows it. */
export interface QueueTask {
  taskId: string;
  /** The instance whose queue holds it; "" is the shared pool. */
  owner: string;
  toolName: string;
  priority: number;
  /** The task's JSON value: integers wider than 2^53 are `bigint`s (exact; written back as
   * JSON integers). The same holds for `result` and `error`. */
  payload: unknown;
  state: "queued" | "running" | "done" | "failed";
  attempts: number;
  maxAttempts: number;
  /** The fencing token of the current run: completing and failing need it. */
  fence: number;
  /** While running: when the lease ends, in ns on the store's clock (as a number: exact to
   * a microsecond). */
  leaseUntilNs: number | null;
  result: unknown;
  error: unknown;
  enqueuedAt: number;
}

export interface LockOptions {
  ttlMs?: number;
  /** Longest wait (`lock_timeout` after it). */
  timeoutMs?: number;
  /** false: `null` at once when someone holds it. */
  wait?: boolean;
  signal?: AbortSignal;
}

export interface Lock {
  resource: string;
  lockId: string;
  holder: string;
  /** The fencing token: larger for every new holder. */
  token: number;
  acquiredAt: number;
  expiresAt: number;
}

/** One event of the daemon's log, as the event stream carries it. */
export interface CoordinatorEvent {
  /** The event's id (pass it as `lastEventId` to resume after it). */
  eventId: string | undefined;
  /** `instance_up`, `instance_down`, `rate_limited`, `cooldown_started`, `workflow_claimed`... */
  kind: string;
  instanceId: string | null;
  wallMs: number | undefined;
  data: Record<string, unknown>;
}

export interface SubscribeOptions {
  /** Resume after this event (0: from the oldest kept); absent: the daemon's default. */
  lastEventId?: string | number | null;
  /** Deliver only these kinds. */
  kinds?: string[];
  /** Reconnect after a broken stream, resuming where it stopped (default true). */
  reconnect?: boolean;
  /** Told of every broken stream (the last one too) and of errors thrown by `onEvent`. */
  onError?: (error: unknown) => void;
}

/** One server-sent event. */
export interface ServerSentEvent {
  type: string;
  data: string;
  lastEventId: string;
}

/** The server-sent events of a byte stream (the HTML standard's rules). */
export declare class EventStreamParser {
  constructor();
  lastEventId: string;
  retryMs: number | undefined;
  /** The events completed by `chunk`. */
  push(chunk: Uint8Array | string): ServerSentEvent[];
}

/** A subscription to the event stream: made by `Coordinator.subscribe`. */
export declare class Subscription {
  constructor(coordinator: Coordinator, onEvent: (event: CoordinatorEvent) => unknown,
              options: SubscribeOptions);
  /** The id of the last event delivered. */
  readonly lastEventId: string | undefined;
  /** How many events were delivered. */
  readonly delivered: number;
  /** Settles when the subscription ends (rejects with the error that ended it). */
  readonly closed: Promise<void>;
  /** Stop reading; no callback starts after this. */
  close(): void;
}

export declare class Coordinator {
  constructor(options?: CoordinatorOptions);
  /** `PI_COORDINATOR_ADDR` and `PI_COORDINATOR_TOKEN` (or `PI_COORDINATOR_TOKEN_FILE`). */
  static fromEnv(options?: CoordinatorOptions): Coordinator;
  readonly baseUrl: string;
  readonly instanceId: string | undefined;
  readonly registration: Registration | undefined;
  /** Heartbeats sent so far (by the loop or by `heartbeat()`). */
  readonly heartbeats: number;

  /** A request of the API (retried as the other methods are); the parsed JSON reply. */
  request(method: "GET" | "POST", path: string, body?: unknown,
          options?: { timeoutMs?: number; signal?: AbortSignal;
                      wide?: "string" | "bigint" }): Promise<any>;
  /** A streaming GET (the event stream): the response once its headers came, or the error. */
  stream(path: string, headers: Record<string, string>, signal: AbortSignal): Promise<Response>;

  register(options?: RegisterOptions): Promise<Registration>;
  heartbeat(workload?: Workload): Promise<{ ok: boolean }>;
  startHeartbeats(): void;
  stopHeartbeats(): void;
  unregister(): Promise<void>;
  /** Close every subscription, stop heartbeats, unregister. */
  close(): Promise<void>;

  acquire(provider: string, options?: AcquireOptions): Promise<Permit>;
  report(permit: Permit, outcome: ReportOptions): Promise<boolean>;
  release(permits: PermitRef | PermitRef[]): Promise<number>;
  withPermit<T>(provider: string, options: AcquireOptions,
                fn: (permit: Permit) => T | Promise<T>): Promise<T>;

  gatewayBaseUrl(provider: string, options?: { sdkAddsVersion?: boolean }): string;
  gatewayHeaders(): Record<string, string>;
  status(): Promise<Record<string, any>>;
  limits(provider?: string): Promise<Record<string, any>>;

  claimWorkflow(workflowId: string, options?: ClaimOptions): Promise<WorkflowClaim>;
  checkWorkflow(workflowId: string, options?: { autoClaim?: boolean }
                ): Promise<Record<string, any>>;
  releaseWorkflow(workflowId: string): Promise<boolean>;
  writeWorkflowState(claim: { workflowId: string; epoch: number },
                     values: Record<string, unknown>): Promise<void>;
  readWorkflowState(workflowId: string): Promise<Record<string, any>>;
  listWorkflows(): Promise<WorkflowRecord[]>;

  acquireLock(resource: string, options?: LockOptions): Promise<Lock | null>;
  renewLock(lock: Lock, options?: { ttlMs?: number }): Promise<Lock>;
  releaseLock(lock: Lock): Promise<boolean>;
  putTask(payload: unknown, options?: PutOptions): Promise<QueueTask>;
  takeTask(options?: { leaseMs?: number }): Promise<QueueTask | null>;
  stealTask(options?: { leaseMs?: number; minQueued?: number }): Promise<QueueTask | null>;
  renewTask(task: QueueTask, options?: { leaseMs?: number }): Promise<QueueTask>;
  completeTask(task: QueueTask, result?: unknown): Promise<QueueTask>;
  failTask(task: QueueTask, error: unknown, options?: { retry?: boolean }): Promise<QueueTask>;
  listTasks(options?: { owner?: string; state?: string; limit?: number }): Promise<QueueTask[]>;
  queueStats(): Promise<Record<string, any>>;

  subscribe(onEvent: (event: CoordinatorEvent) => unknown,
            options?: SubscribeOptions): Promise<Subscription>;
}

/** `JSON.parse`, with integers wider than 2^53 read as decimal strings (or `bigint`s). */
export declare function parseJson(text: string, wide?: "string" | "bigint"): any;
/** `JSON.stringify`, with `bigint`s written as JSON integers. */
export declare function stringifyJson(value: unknown): string;
