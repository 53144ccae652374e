"""``POST /v1/store/<operation>``: the store protocol over HTTP, for ``stores.remote``.

Each operation of ``stores.remote.ops`` runs as one call of the daemon's store, with the
arguments decoded and checked against the table (an unknown or mistyped argument is a 400
naming it, never a 500). Operations that change state are applied once per
``X-Pi-Request-Id`` (``daemon.once``). ``GET /v1/store`` says what the served store is and can do.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model
from starlette.types import ASGIApp, Receive, Scope, Send

from cross_instance.core.budgets import parse_spend_key
from cross_instance.core.jsonvalues import unstorable
from cross_instance.core.keys import is_bucket, parse_key
from cross_instance.core.locking import MAX_TTL_NS, MIN_TTL_NS
from cross_instance.core.records import MAX_COUNT, Granted
from cross_instance.daemon.guard import BodyTooLarge, read_body, send_json
from cross_instance.daemon.hosted import hosted_of
from cross_instance.daemon.metrics import metrics_for
from cross_instance.daemon.replies import CLIENT_GONE, Reply
from cross_instance.daemon.state import Daemon
from cross_instance.daemon.wire import ValidationError, decode, encode, error_body, status_of
from cross_instance.errors import CrossInstanceError
from cross_instance.stores.redis.connection import redact
from cross_instance.stores.remote.ops import OPS, TAGS, Op

# reads that grow with the state: in the daemon's thread pool, the rest on its event loop
SLOW = frozenset({"snapshot", "list_instances", "list_workflows", "list_locks", "events",
                  "reap", "cleanup_expired_locks", "list_tasks", "queue_counts"})


def reply_json(status: int, data: Any) -> Reply:
    return status, json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def problem(code: str, message: str) -> Reply:
    return reply_json(status_of(code), {"code": code, "message": message, "retryable": False})


def failure(err: BaseException) -> Reply:
    body = error_body(err)
    return reply_json(status_of(body["code"]), body)


def encode_result(op: Op, value: Any) -> Any:
    if isinstance(op.result, tuple):
        if value is None:
            return None
        return {"type": TAGS[type(value)], **encode(type(value), value)}
    if op.result is None:
        return None
    return encode(op.result, value)


def _method(store: Any, op: Op) -> Callable[..., Any]:
    if op.name == "decide":
        return store._decide  # type: ignore[no-any-return]  # the one decision of both forms
    return getattr(store, op.name)  # type: ignore[no-any-return]


def decode_args(op: Op, body: object, escapes: bool = True) -> dict[str, Any]:
    """The operation's arguments from a JSON object; ``ValueError`` naming the first wrong one.
    ``escapes``: the JSON text held ``\\u`` escapes (the only way to a lone surrogate, which
    UTF-8 cannot carry), so its text is checked for one."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object of the operation's arguments")
    names = {name for name, _ in op.args}
    unknown = sorted(set(body) - names)
    if unknown:
        raise ValueError(f"unknown argument(s) for {op.name}: {', '.join(unknown)}")
    args = {}
    for name, kind in op.args:
        if name not in body:
            raise ValueError(f"{op.name}: missing argument {name!r}")
        wrong = unstorable(body[name]) if escapes else None
        if wrong is not None:
            raise ValueError(f"{op.name}: argument {name} holds {wrong}")
        try:
            args[name] = decode(kind, body[name])
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in (name, *first["loc"]))
            raise ValueError(f"{op.name}: argument {where}: {first['msg']}") from None
    keys = _KEYS.get(op.name)
    for key, kind in keys(args) if keys is not None else ():
        check_key(key, kind)  # ValueError naming it
    return args


def quick_args(op: Op, data: bytes) -> dict[str, Any] | None:
    """The arguments of a body without ``\\u`` escapes, parsed and checked in one step by the
    operation's model (as ``decode_args`` would check them), or None when anything is wrong
    (then ``decode_args`` says what)."""
    try:
        parsed = _model(op).model_validate_json(data)
    except ValidationError:
        return None
    args = {name: getattr(parsed, name) for name, _ in op.args}
    keys = _KEYS.get(op.name)
    for key, kind in keys(args) if keys is not None else ():
        if (key, kind) not in _GOOD_KEYS:
            try:
                check_key(key, kind)
            except ValueError:
                return None
            if len(_GOOD_KEYS) < 10_000:
                _GOOD_KEYS.add((key, kind))
    return args


_GOOD_KEYS: set[tuple[str, str]] = set()
_FREES = frozenset({"release", "cancel_wait", "unregister_instance", "reap"})


def _counts(*values: int | float | None) -> str | None:
    for v in values:
        if v is not None and not (0 <= v <= MAX_COUNT):
            return f"a count outside 0..{MAX_COUNT} ({v!r})"
    return None


def _heartbeat_ranges(a: dict[str, Any]) -> str | None:
    w = a["workload"]
    return (_counts(w.pending_tasks, w.active_orchestrations) if w is not None else None) or \
        (_counts(*a["usage"].values()) if a["usage"] is not None else None) or \
        (None if w is None or w.avg_latency_ms is None or (math.isfinite(w.avg_latency_ms)
         and 0 <= w.avg_latency_ms <= 1e12) else "an average latency that is not a duration")


def _spend_ranges(a: dict[str, Any]) -> str | None:
    for _, amount, expires in a["changes"]:
        if not 0 <= amount <= MAX_COUNT:
            return f"a spend amount outside 0..{MAX_COUNT} nano-dollars ({amount!r})"
        if not 0 <= expires < 2**63:
            return f"a spend expiry outside 0..2**63-1 ns ({expires!r})"
    return None


def _ttl_range(a: dict[str, Any]) -> str | None:
    return (None if MIN_TTL_NS <= a["ttl_ns"] <= MAX_TTL_NS
            else f"a lock ttl outside {MIN_TTL_NS}..{MAX_TTL_NS} ns")


def _fence(a: dict[str, Any]) -> str | None:
    """A fence beyond 64 bits (no store keeps one); any other is the store's to refuse (a
    fence no run holds, negative too, is a lost run: None, as in every store)."""
    return (None if -(2**63) <= a["fence"] < 2**63
            else f"a fence outside 64 bits ({a['fence']!r})")


#: Numbers a store would keep but no reader could use (a count past what Redis keeps
#: exactly poisons every later status read there): refused by name.
_RANGES: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "heartbeat": _heartbeat_ranges,
    "set_active_model": lambda a: (None if abs(a["delta"]) <= 2**31
                                   else f"a use count change of {a['delta']}"),
    "events": lambda a: (None if 0 <= a["after_id"] <= MAX_COUNT and 1 <= a["limit"] <= 10_000
                         else "after_id must be 0 or more and limit 1..10000"),
    "acquire_lock": _ttl_range,
    "renew_lock": _ttl_range,
    "add_spend": _spend_ranges,
    # (a task's JSON text is the store's to check: core.jsonvalues, as for every caller)
    "renew_task": _fence,
    "settle_task": _fence,
    "settle_and_take": _fence,
}
#: The operations that store JSON as given: checked whole, whatever the body's text held.
_FREE_FORM = {"write_workflow_state": "values", "record_event": "data"}


@functools.cache
def _model(op: Op) -> type[BaseModel]:
    fields: dict[str, Any] = {name: (kind, ...) for name, kind in op.args}
    return create_model(f"{op.name}_args", __config__=ConfigDict(extra="forbid"), **fields)


#: The kinds of key an operation's arguments hold: a rate bucket, a slot group
#: (``core.keys``) or a spend key (``core.budgets``).
BUCKET, GROUP, SPEND = "bucket", "group", "spend"

#: The keys among an operation's arguments, with the kind each must be: one that is not a key
#: of its kind would be stored, and break every later view of the store.
_KEYS: dict[str, Callable[[dict[str, Any]], Iterable[tuple[str, str]]]] = {
    "publish_limits": lambda a: [*((k, BUCKET) for k in a["rates"]),
                                 *((k, GROUP) for k in a["groups"])],
    "decide": lambda a: [*((k, BUCKET) for k, _ in a["request"].rates),
                         *((k, GROUP) for k in a["request"].slots)],
    "adjust_tokens": lambda a: [(k, BUCKET) for k, _ in a["changes"]],
    "record_outcome": lambda a: [*((k, BUCKET) for k in a["keys"]),
                                 *((r[0], BUCKET) for r in a["outcome"].reported)],
    "reset_learned": lambda a: [(k, BUCKET) for k in a["keys"] or ()],
    "add_spend": lambda a: [(c[0], SPEND) for c in a["changes"]],
    "read_spend": lambda a: [(k, SPEND) for k in a["keys"]],
}


def check_key(key: str, kind: str) -> None:
    """``ValueError`` unless ``key`` is a store key of the kind its place needs (a group's
    limit kept under a bucket's key would become that bucket's burst of 0)."""
    if kind == SPEND:
        parse_spend_key(key)  # ValueError naming it
        return
    parse_key(key)
    if is_bucket(key) != (kind == BUCKET):
        raise ValueError(f"{key!r} is not a {'rate bucket' if kind == BUCKET else 'slot group'}"
                         f" key")


async def _apply(daemon: Daemon, op: Op, args: dict[str, Any]) -> Reply:
    try:
        call = functools.partial(_method(daemon.store, op), **args)
        value = await (daemon.run(call) if op.name in SLOW else daemon.call(call))
    except CrossInstanceError as err:
        return failure(err)
    except (OverflowError, ValueError) as err:  # values out of the store's range (SQLite)
        return problem("invalid_request", f"{op.name}: the store refused the arguments: {err}")
    if op.name in _FREES or (op.name == "decide" and args["release"]):
        hosted_of(daemon).freed()  # HTTP clients waiting here ask again at once
    if op.name == "decide" and isinstance(value, Granted):
        request = args["request"]
        metrics_for(daemon).remote_permit_granted(request.provider, request.model)
    return reply_json(200, {"result": encode_result(op, value)})


class StoreProtocol:
    """``/v1/store`` as plain ASGI, in front of the API app (a permit is one of these
    requests: it skips the framework's routing and exception layers); any other path goes
    on to ``app``."""

    def __init__(self, app: ASGIApp, daemon: Daemon) -> None:
        self.app = app
        self.daemon = daemon

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/store"):
            await self.app(scope, receive, send)
            return
        extra: list[tuple[bytes, bytes]] = []
        if path == "/v1/store" and scope["method"] in ("GET", "HEAD"):
            status, body = self._info()
        elif path.startswith("/v1/store/") and scope["method"] == "POST":
            try:
                data = await read_body(receive)
            except BodyTooLarge as err:
                status, body = problem("request_too_large", str(err))
            else:
                if data is None:  # the client left mid-body: nothing is applied
                    status, body = reply_json(CLIENT_GONE, {
                        "code": "client_gone", "retryable": True, "message": "the client left"})
                else:
                    status, body = await self._op(path[len("/v1/store/"):], data)
        elif path == "/v1/store" or path.startswith("/v1/store/"):
            allow = b"GET" if path == "/v1/store" else b"POST"
            status, body = problem("method_not_allowed",
                                   f"{scope['method']} is not allowed on {path}")
            extra = [(b"allow", allow)]
        else:  # /v1/storefront and the like: not ours
            await self.app(scope, receive, send)
            return
        await send_json(send, status, body, extra)

    async def _op(self, name: str, data: bytes) -> Reply:
        # an over-long or resent X-Pi-Request-Id is answered by daemon.once before this
        op = OPS.get(name)
        if op is None:
            return problem("not_found", f"no store operation {name!r}")
        args = None if b"\\u" in data else quick_args(op, data)
        if args is None:  # escaped text, or something wrong: the careful path names it
            try:
                args = decode_args(op, json.loads(data), b"\\u" in data)
            except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
                return problem("invalid_request", str(err))
        free = _FREE_FORM.get(op.name)
        wrong = unstorable(args[free]) if free is not None else None
        check = _RANGES.get(op.name)
        wrong = wrong or (check(args) if check is not None else None)
        if wrong is not None:
            return problem("invalid_request", f"{op.name}: an argument holds {wrong}")
        return await _apply(self.daemon, op, args)

    def _info(self) -> Reply:
        store = self.daemon.store
        return reply_json(200, {
            "url": redact(store.url), "prefix": store.prefix,
            "capabilities": sorted(store.capabilities), "warnings": list(store.warnings),
            "operations": sorted(OPS)})
