"""The daemon's JSON: records of ``core`` as plain objects, and errors as ``{"code", ...}``.

One codec for both ends (the daemon and ``stores.remote``), so a record that crosses the wire
comes back equal to what was sent. Errors keep their stable ``code``, their human message and
the fields that name what went wrong (the original coordinator's names where it defines them:
``retryAfter`` on ``RATE_LIMIT_EXCEEDED``, the seed's payload on ``workflow_owned_by_other``),
and a client raises the same exception class the store raised in the daemon.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter, ValidationError

from cross_instance import errors as E

__all__ = ["ValidationError", "decode", "encode", "error_body", "error_from_body",
           "problems_message", "status_of"]


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def encode(kind: Any, value: Any) -> Any:
    """``value`` (of type ``kind``) as JSON-ready data."""
    return _adapter(kind).dump_python(value, mode="json")


def decode(kind: Any, data: Any) -> Any:
    """Data of type ``kind`` from JSON; ``ValidationError`` naming the field when it is not."""
    return _adapter(kind).validate_python(data, strict=False)


# code -> (class, constructor fields as (wire name, attribute name))
_FIELDS: dict[str, tuple[type[E.CrossInstanceError], tuple[tuple[str, str], ...]]] = {
    E.RateLimitExceeded.code: (E.RateLimitExceeded, (
        ("provider", "provider"), ("model", "model"), ("retryAfter", "retry_after"),
        ("reason", "reason"))),
    E.BudgetExceeded.code: (E.BudgetExceeded, (
        ("provider", "provider"), ("model", "model"), ("retryAfter", "retry_after"),
        ("reason", "reason"))),
    E.DuplicateInstanceError.code: (E.DuplicateInstanceError, (
        ("instanceId", "instance_id"), ("holderPid", "holder_pid"),
        ("holderHost", "holder_host"))),
    E.WorkflowOwnedError.code: (E.WorkflowOwnedError, (
        ("ulTaskId", "workflow_id"), ("ownerInstanceId", "owner_instance_id"),
        ("ownerPid", "owner_pid"), ("ownerHost", "owner_host"), ("reason", "reason"))),
    E.StaleEpochError.code: (E.StaleEpochError, (
        ("workflowId", "workflow_id"), ("epoch", "epoch"), ("currentEpoch", "current_epoch"),
        ("currentOwner", "current_owner"))),
    E.LockLostError.code: (E.LockLostError, (
        ("resource", "resource"), ("token", "token"), ("reason", "reason"))),
    E.TaskLostError.code: (E.TaskLostError, (
        ("taskId", "task_id"), ("fence", "fence"), ("reason", "reason"))),
    E.LockTimeoutError.code: (E.LockTimeoutError, (
        ("resource", "resource"), ("holder", "holder"), ("waitedS", "waited_s"))),
}
# errors that are just a message (and, for stores, a location)
_PLAIN: dict[str, type[E.CrossInstanceError]] = {
    cls.code: cls for cls in (
        E.NotRegisteredError, E.Cancelled, E.InvalidArgument, E.PermitRequestError,
        E.LockRequestError, E.WorkflowRequestError, E.StoreError, E.StoreUnavailable,
        E.StoreCorrupt, E.UnsupportedLocation, E.UnsupportedPlatform, E.CrossInstanceError)
}
_STATUS = {
    E.RateLimitExceeded.code: 429, E.BudgetExceeded.code: 429,
    E.DuplicateInstanceError.code: 409,
    E.WorkflowOwnedError.code: 409, E.StaleEpochError.code: 409, E.LockLostError.code: 409,
    E.TaskLostError.code: 409,
    E.LockTimeoutError.code: 408, E.NotRegisteredError.code: 404,
    E.StoreUnavailable.code: 503, E.StoreCorrupt.code: 500, E.StoreError.code: 500,
    E.Cancelled.code: 409, "invalid_request": 400, "unauthorized": 401, "not_found": 404,
    "request_too_large": 413, "request_in_progress": 409, "method_not_allowed": 405,
}


def status_of(code: str) -> int:
    """The HTTP status of an error code (argument errors are 400)."""
    return _STATUS.get(code, 400 if code.endswith("_invalid") or code.startswith("invalid")
                       else 500)


def problems_message(errors: list[Any]) -> str:
    """One line naming what is wrong in a request body (pydantic's errors, the first five)."""
    problems = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


def error_body(err: BaseException) -> dict[str, Any]:
    """The JSON of an error: ``code``, ``message``, ``retryable`` and its named fields."""
    if not isinstance(err, E.CrossInstanceError):
        return {"code": "internal_error", "message": f"{type(err).__name__}: {err}",
                "retryable": False}
    body: dict[str, Any] = {"code": err.code, "message": str(err), "retryable": err.retryable}
    spec = _FIELDS.get(err.code)
    if spec is not None and isinstance(err, spec[0]):
        for wire, attr in spec[1]:
            body[wire] = getattr(err, attr)
    if isinstance(err, E.WorkflowOwnedError):
        body["details"] = err.payload()
    if isinstance(err, E.StoreError) and err.location:
        body["location"] = err.location
    if isinstance(err, E.StoreUnavailable) and err.undecided_permit is not None:
        body["undecidedPermit"] = err.undecided_permit
    return body


def error_from_body(body: Any, status: int) -> E.CrossInstanceError:
    """The exception a daemon's error reply stands for (``StoreError`` for one this version
    does not know)."""
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        return E.StoreError(f"the coordinator answered HTTP {status} without an error body")
    code, message = body["code"], str(body.get("message", ""))
    spec = _FIELDS.get(code)
    if spec is not None:
        try:
            return spec[0](*(body[wire] for wire, _ in spec[1]))
        except (KeyError, TypeError):
            pass
    cls = _PLAIN.get(code)
    if cls is not None and issubclass(cls, E.StoreError):
        err: E.CrossInstanceError = cls(message, location=str(body.get("location", "")))
        if isinstance(err, E.StoreUnavailable) and isinstance(body.get("undecidedPermit"), int):
            err.undecided_permit = body["undecidedPermit"]
        return err
    if cls is not None:
        return cls(message)
    if code in ("invalid_request", "request_too_large"):
        return E.InvalidArgument(message)
    return E.StoreError(f"the coordinator refused the request ({code}): {message}")
