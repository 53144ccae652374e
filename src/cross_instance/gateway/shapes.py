"""The answers the gateway gives itself, in the wire format of the provider the client
called, so its SDK reads them as it reads the provider's own (status code, error type,
``Retry-After``): a rate limit it could not wait out, an unreachable or silent upstream, a
request it will not forward."""

from __future__ import annotations

import json
import math

from cross_instance.core.upstreams import Api

# (status, OpenAI type, OpenAI code, Anthropic type) of each answer the gateway makes
KINDS: dict[str, tuple[int, str, str, str]] = {
    "rate_limited": (429, "requests", "rate_limit_exceeded", "rate_limit_error"),
    "budget_exceeded": (429, "insufficient_quota", "budget_exceeded", "rate_limit_error"),
    "invalid_request": (400, "invalid_request_error", "invalid_request",
                        "invalid_request_error"),
    "not_configured": (404, "invalid_request_error", "provider_not_configured",
                       "not_found_error"),
    "too_large": (413, "invalid_request_error", "request_too_large", "request_too_large"),
    "upstream_unreachable": (502, "api_error", "upstream_unreachable", "api_error"),
    "upstream_timeout": (504, "api_error", "upstream_timeout", "timeout_error"),
    "unavailable": (503, "api_error", "coordinator_unavailable", "overloaded_error"),
}


def error_reply(api: Api, kind: str, message: str, retry_after_s: float | None = None
                ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of the gateway's own ``kind`` of answer, shaped as ``api``
    shapes its errors; a rate limit carries ``Retry-After`` (whole seconds, rounded up) and
    ``retry-after-ms``."""
    status, openai_type, code, anthropic_type = KINDS[kind]
    body: dict[str, object]
    if api == "anthropic":
        body = {"type": "error", "error": {"type": anthropic_type, "message": message}}
    else:
        body = {"error": {"message": message, "type": openai_type, "param": None,
                          "code": code}}
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(data)).encode()),
               (b"x-pi-gateway", kind.encode())]
    if retry_after_s is not None:
        wait = max(0.0, retry_after_s)
        headers.append((b"retry-after", str(max(1, math.ceil(wait))).encode()))
        headers.append((b"retry-after-ms", str(math.ceil(wait * 1000)).encode()))
    return status, headers, data
