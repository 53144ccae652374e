"""``RemoteStore``: the store protocol through a coordinator daemon (``pi-xi serve``).

Promises:
- The same behaviour as the store the daemon serves: the same shared suite runs on it.
- A daemon that does not answer (down, restarting, unreachable) is retried with backoff for
  ``unavailable_after`` seconds (default 5), then the caller gets ``StoreUnavailable``
  (retryable, naming the address): never a hang. Every retry of an operation that changes
  state carries the same request id, and waits and permits carry the ticket the client chose,
  so a retry after a lost reply is applied once.
- The token (``PI_COORDINATOR_TOKEN``, or the file ``PI_COORDINATOR_TOKEN_FILE``) goes in every
  request and is never shown in an error.
- One keep-alive connection per thread (``http.client``: a permit is one small request).
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cross_instance.core.limiter import RateSpec
from cross_instance.core.limits import AdaptiveSettings
from cross_instance.core.locking import LockRecord, LockWaiting
from cross_instance.core.ownership import Claim, Force, WorkflowRecord
from cross_instance.core.records import (
    Adjustment,
    Event,
    Granted,
    InstanceRecord,
    Outcome,
    PermitRequest,
    PermitState,
    Snapshot,
    Waiting,
    Workload,
)
from cross_instance.core.workqueue import Outcome as TaskOutcome
from cross_instance.core.workqueue import (
    OwnerCounts,
    Task,
    TaskState,
    check_lookup,
    check_new_task,
)
from cross_instance.daemon.wire import decode, encode, error_from_body
from cross_instance.errors import ConfigError, StoreError, StoreUnavailable
from cross_instance.stores import base
from cross_instance.stores.base import FreedSlots, PermitDecisions
from cross_instance.stores.permit_ids import new_ticket
from cross_instance.stores.redis.connection import redact
from cross_instance.stores.remote.ops import BY_TAG, OPS, Op

REQUEST_ID = "X-Pi-Request-Id"
#: Leaving a queue is tidiness, not correctness (a wait nobody renews expires with the waiter
#: TTL): after a failed wait it is tried briefly, so a caller is told of an unreachable daemon
#: once, within one bound, not twice.
CLEANUP = frozenset({"cancel_wait", "cancel_lock_wait"})
CLEANUP_BOUND_S = 0.5
#: What a lost reply may leave undone without harm (usage reconciled, a 429 learned, an event
#: written, a model's use count): once the daemon cannot tell whether it applied one, it is
#: taken as done rather than risk applying it twice.
BEST_EFFORT = frozenset({"adjust_tokens", "record_outcome", "record_event",
                         "set_active_model"})
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 30.0


@functools.lru_cache(maxsize=1024)
def _request_json(request: PermitRequest) -> str:
    """A permit request as JSON (a runtime asks with the same few requests over and over)."""
    return json.dumps(encode(PermitRequest, request), separators=(",", ":"))


def parse_addr(addr: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; ``http://`` allowed) as a pair, or ``ConfigError``."""
    text = addr.strip()
    for scheme in ("http://", "pi://"):
        if text.startswith(scheme):
            text = text[len(scheme):].rstrip("/")
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("coordinatorAddr", "", f"expected host:port, got {redact(addr)!r}")
    return host, int(port)


def token_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """``PI_COORDINATOR_TOKEN``, else the first line of ``PI_COORDINATOR_TOKEN_FILE``."""
    env = os.environ if env is None else env
    token = env.get("PI_COORDINATOR_TOKEN")
    if token:
        return token.strip()
    path = env.get("PI_COORDINATOR_TOKEN_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.readline().strip() or None
        except OSError as err:
            raise ConfigError("PI_COORDINATOR_TOKEN_FILE", "",
                              f"cannot read the token file {path!r}: {err.strerror}") from None
    return None


class RemoteStore(PermitDecisions):
    """A ``Store`` served by the daemon at ``addr``."""

    queued: int | None = None

    def __init__(self, addr: str, *, token: str | None = None,
                 unavailable_after: float = 5.0, **options: Any) -> None:
        if options.get("clock") is not None:
            raise ConfigError("store", f"coordinator {addr}", "a remote store runs on the "
                              "daemon's clock (give the daemon's store the clock instead)")
        # waiter_ttl_ns and other options of a local store are the daemon's own settings
        self.host, self.port = parse_addr(addr)
        self.url = f"http://{addr.split('://')[-1].rstrip('/')}"
        self.where = f"coordinator {self.host}:{self.port}"
        self._auth = f"Bearer {token}" if token is not None else None
        self.unavailable_after = unavailable_after
        self._local = threading.local()
        self._closed = False
        info = self._get("/v1/store")
        self.prefix = str(info.get("prefix", ""))
        self.capabilities = frozenset(info.get("capabilities", ()))
        self.warnings = [str(w) for w in info.get("warnings", [])]
        self.serves = str(info.get("url", ""))

    # --- transport ------------------------------------------------------------------------
    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_S)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _exchange(self, method: str, path: str, body: bytes | None,
                  request_id: str | None, bound: float | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if self._auth is not None:
            headers["Authorization"] = self._auth
        if request_id is not None:
            headers[REQUEST_ID] = request_id
        bound = self.unavailable_after if bound is None else bound
        deadline = time.monotonic() + bound
        pause = 0.02
        while True:
            if self._closed:
                raise StoreUnavailable(f"{self.where}: the store is closed", location=self.where)
            conn = self._conn()
            try:
                conn.request(method, path, body, headers)
                if conn.sock is not None:
                    conn.sock.settimeout(READ_TIMEOUT_S)
                response = conn.getresponse()
                data = response.read()
                status = response.status
                if response.will_close:
                    self._drop()
            except (OSError, http.client.HTTPException) as err:
                self._drop()
                if time.monotonic() + pause > deadline:
                    raise StoreUnavailable(
                        f"{self.where} did not answer for {bound:g}s "
                        f"({type(err).__name__}: {err}); is `pi-xi serve` running?",
                        location=self.where) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
                continue
            try:
                return status, json.loads(data) if data else None
            except ValueError:
                raise StoreError(f"{self.where} answered HTTP {status} with a body that is "
                                 "not JSON (is that address a pi-xi daemon?)",
                                 location=self.where) from None

    def _get(self, path: str) -> Any:
        status, data = self._exchange("GET", path, None, None)
        if status != 200:
            raise error_from_body(data, status)
        return data

    def _call(self, name: str, *values: Any) -> Any:
        op: Op = OPS[name]
        if name == "decide":  # the permit path: the request's JSON is made once per shape
            request, ticket, queue, release = values
            body = (f'{{"request":{_request_json(request)},"ticket":{int(ticket)},'
                    f'"queue":{"true" if queue else "false"},'
                    f'"release":{json.dumps([int(r) for r in release])}}}').encode()
        else:
            args = {arg: encode(kind, value) for (arg, kind), value in zip(op.args, values,
                                                                            strict=True)}
            text = json.dumps(args, separators=(",", ":"), ensure_ascii=False)
            try:  # UTF-8 as it is: an escaped "é" is 6 bytes, and "😀" 12
                body = text.encode()
            except UnicodeEncodeError:  # a lone surrogate: escaped, the daemon names it
                body = json.dumps(args, separators=(",", ":")).encode()
        status, data = self._exchange(
            "POST", f"/v1/store/{name}", body,
            secrets.token_hex(12) if op.changes and not op.resend_safe else None,
            CLEANUP_BOUND_S if name in CLEANUP else None)
        if status != 200:
            if (status == 409 and isinstance(data, dict) and name in BEST_EFFORT
                    and data.get("code") == "request_outcome_unknown"):
                return [] if name == "record_outcome" else None  # applied once, or not at all
            raise error_from_body(data, status)
        result = data.get("result") if isinstance(data, dict) else None
        if isinstance(op.result, tuple):
            return None if result is None else decode(BY_TAG[result.pop("type")], result)
        return None if op.result is None else decode(op.result, result)

    # --- the protocol ---------------------------------------------------------------------
    def freed_channel(self, instance_id: str, on_freed: Callable[[int], object],
                      on_subscribed: Callable[[], object]) -> FreedSlots | None:
        return None

    def now_ns(self) -> int:
        return int(self._call("now_ns"))

    def register_instance(self, record: InstanceRecord) -> InstanceRecord:
        return self._call("register_instance", record)  # type: ignore[no-any-return]

    def rejoin_instance(self, record: InstanceRecord, held: Sequence[PermitState]) -> int:
        return int(self._call("rejoin_instance", record, list(held)))

    def heartbeat(self, instance_id: str, workload: Workload | None = None,
                  usage: Mapping[str, int] | None = None) -> bool:
        return bool(self._call("heartbeat", instance_id, workload,
                               None if usage is None else dict(usage)))

    def unregister_instance(self, instance_id: str) -> None:
        self._call("unregister_instance", instance_id)

    def list_instances(self) -> list[InstanceRecord]:
        return self._call("list_instances")  # type: ignore[no-any-return]

    def reap(self) -> list[str]:
        return self._call("reap")  # type: ignore[no-any-return]

    def set_active_model(self, instance_id: str, provider: str, model: str, delta: int) -> None:
        self._call("set_active_model", instance_id, provider, model, delta)

    def clear_active_models(self, instance_id: str) -> None:
        self._call("clear_active_models", instance_id)

    def publish_limits(self, instance_id: str, rates: Mapping[str, RateSpec],
                       groups: Mapping[str, int]) -> None:
        self._call("publish_limits", instance_id, dict(rates), dict(groups))

    def _decide(self, request: PermitRequest, ticket: int | None, queue: bool,
                release: Sequence[int]) -> Granted | Waiting | None:
        # the ticket is chosen here, so a resent attempt finds its first attempt's grant
        return self._call("decide", request, new_ticket() if ticket is None else ticket,  # type: ignore[no-any-return]
                          queue, list(release))

    def cancel_wait(self, ticket: int) -> None:
        self._call("cancel_wait", ticket)

    def release(self, instance_id: str, permit_ids: Sequence[int]) -> int:
        return int(self._call("release", instance_id, list(permit_ids)))

    def adjust_tokens(self, changes: Sequence[tuple[str, int]]) -> None:
        self._call("adjust_tokens", list(changes))

    def record_outcome(self, keys: Sequence[str], outcome: Outcome, policy: AdaptiveSettings
                       ) -> list[Adjustment]:
        return self._call("record_outcome", list(keys), outcome, policy)  # type: ignore[no-any-return]

    def claim_workflow(self, workflow_id: str, instance_id: str, *, take: bool = True,
                       auto_claim: bool = True, force: Force = Force.NO) -> Claim:
        return self._call("claim_workflow", workflow_id, instance_id, take, auto_claim, force)  # type: ignore[no-any-return]

    def release_workflow(self, workflow_id: str, instance_id: str,
                         epoch: int | None = None, by: str | None = None) -> bool:
        return bool(self._call("release_workflow", workflow_id, instance_id, epoch, by))

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        return self._call("get_workflow", workflow_id)  # type: ignore[no-any-return]

    def list_workflows(self) -> list[WorkflowRecord]:
        return self._call("list_workflows")  # type: ignore[no-any-return]

    def write_workflow_state(self, workflow_id: str, instance_id: str, epoch: int,
                             values: Mapping[str, Any]) -> None:
        self._call("write_workflow_state", workflow_id, instance_id, epoch, dict(values))

    def validate_epoch(self, workflow_id: str, instance_id: str, epoch: int) -> None:
        self._call("validate_epoch", workflow_id, instance_id, epoch)

    def read_workflow_state(self, workflow_id: str) -> dict[str, Any]:
        return self._call("read_workflow_state", workflow_id)  # type: ignore[no-any-return]

    def acquire_lock(self, resource: str, instance_id: str, ttl_ns: int, ticket: int | None,
                     wait: bool) -> LockRecord | LockWaiting | None:
        return self._call("acquire_lock", resource, instance_id, ttl_ns,  # type: ignore[no-any-return]
                          new_ticket() if ticket is None else ticket, wait)

    def cancel_lock_wait(self, ticket: int) -> None:
        self._call("cancel_lock_wait", ticket)

    def renew_lock(self, resource: str, lock_id: str, ttl_ns: int) -> LockRecord | None:
        return self._call("renew_lock", resource, lock_id, ttl_ns)  # type: ignore[no-any-return]

    def release_lock(self, resource: str, lock_id: str) -> bool:
        return bool(self._call("release_lock", resource, lock_id))

    def list_locks(self) -> list[LockRecord]:
        return self._call("list_locks")  # type: ignore[no-any-return]

    def cleanup_expired_locks(self) -> list[LockRecord]:
        return self._call("cleanup_expired_locks")  # type: ignore[no-any-return]

    def snapshot(self) -> Snapshot:
        return self._call("snapshot")  # type: ignore[no-any-return]

    def record_event(self, kind: str, instance_id: str | None,
                     data: Mapping[str, object]) -> None:
        self._call("record_event", kind, instance_id, dict(data))

    def events(self, after_id: int = 0, limit: int = 100) -> list[Event]:
        return self._call("events", after_id, limit)  # type: ignore[no-any-return]

    def reset_learned(self, keys: Iterable[str] | None = None) -> int:
        return int(self._call("reset_learned", None if keys is None else list(keys)))

    def add_spend(self, changes: Sequence[tuple[str, int, int]]) -> list[int]:
        return self._call("add_spend", base.checked_spend(changes))  # type: ignore[no-any-return]

    def read_spend(self, keys: Sequence[str]) -> list[int]:
        return self._call("read_spend", base.checked_spend_keys(keys))  # type: ignore[no-any-return]

    # --- work queue: arguments checked here as every store checks them, before sending ---
    def put_task(self, owner: str, task_id: str, tool_name: str, priority: int, payload: str,
                 max_attempts: int) -> Task:
        check_new_task(task_id, tool_name, priority, payload, max_attempts)
        return self._call("put_task", owner, task_id, tool_name, priority, payload,  # type: ignore[no-any-return]
                          max_attempts)

    def take_task(self, instance_id: str, lease_ns: int) -> Task | None:
        return self._call("take_task", instance_id,  # type: ignore[no-any-return]
                          base.checked_lease("lease_ns", lease_ns))

    def steal_task(self, instance_id: str, lease_ns: int, min_queued: int) -> Task | None:
        lease = base.checked_lease("lease_ns", lease_ns)
        return self._call("steal_task", instance_id, lease,  # type: ignore[no-any-return]
                          base.checked_min_queued(min_queued))

    def renew_task(self, task_id: str, fence: int, lease_ns: int) -> Task | None:
        return self._call("renew_task", task_id, fence,  # type: ignore[no-any-return]
                          base.checked_lease("lease_ns", lease_ns))

    def settle_task(self, task_id: str, fence: int, outcome: TaskOutcome, text: str
                    ) -> Task | None:
        base.checked_settle(outcome, text)
        return self._call("settle_task", task_id, fence, outcome, text)  # type: ignore[no-any-return]

    def settle_and_take(self, task_id: str, fence: int, outcome: TaskOutcome, text: str,
                        instance_id: str, lease_ns: int) -> tuple[Task | None, Task | None]:
        base.checked_settle(outcome, text)
        settled, taken = self._call("settle_and_take", task_id, fence, outcome, text,
                                    instance_id, base.checked_lease("lease_ns", lease_ns))
        return settled, taken

    def get_task(self, task_id: str) -> Task | None:
        check_lookup(task_id)
        return self._call("get_task", task_id)  # type: ignore[no-any-return]

    def list_tasks(self, owner: str | None = None, state: TaskState | None = None,
                   limit: int = 100) -> list[Task]:
        check_lookup(owner=owner)
        base.checked_state(state)
        return self._call("list_tasks", owner, state,  # type: ignore[no-any-return]
                          base.checked_limit(limit))

    def queue_counts(self) -> list[OwnerCounts]:
        return self._call("queue_counts")  # type: ignore[no-any-return]

    def reset_stealing_stats(self, instance_id: str | None = None) -> None:
        self._call("reset_stealing_stats", instance_id)

    def close(self) -> None:
        self._closed = True
        self._drop()
