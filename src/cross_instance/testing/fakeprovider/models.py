"""The model catalog behind ``GET /v1/models`` and ``GET /v1/models/{id}``. Pure functions.

OpenAI shapes (``{object: "list", data: [{id, object: "model", created, owned_by}]}``) by
default; Anthropic's (``{data: [{type: "model", id, display_name, created_at}], has_more,
first_id, last_id}``) for requests that carry an ``anthropic-version`` header, as the
``anthropic`` SDK's do. The completion routes accept any model name; the catalog lists a fixed
few so that listing, retrieving and a 404 for an unknown id can be tested.
"""

from __future__ import annotations

from typing import Any

from cross_instance.testing.fakeprovider import responses as rs

OPENAI_MODELS = ("gpt-fake", "gpt-4o-mini", "text-embedding-3-small")
ANTHROPIC_MODELS = ("claude-fake", "claude-3-5-haiku-latest")
CREATED = 1_700_000_000
CREATED_AT = "2023-11-14T22:13:20Z"  # CREATED in RFC 3339
OWNER = "fake-provider"


def model_list(api: rs.Api) -> dict[str, Any]:
    """Every model of ``api``'s catalog, in ``api``'s list shape (one page)."""
    if api == "anthropic":
        data = [_anthropic_model(mid) for mid in ANTHROPIC_MODELS]
        return {"data": data, "has_more": False, "first_id": data[0]["id"],
                "last_id": data[-1]["id"]}
    return {"object": "list", "data": [_openai_model(mid) for mid in OPENAI_MODELS]}


def model(api: rs.Api, model_id: str) -> dict[str, Any] | None:
    """The model object for ``model_id`` in ``api``'s shape, or ``None`` if not in the catalog."""
    if api == "anthropic":
        return _anthropic_model(model_id) if model_id in ANTHROPIC_MODELS else None
    return _openai_model(model_id) if model_id in OPENAI_MODELS else None


def not_found(api: rs.Api, model_id: str) -> dict[str, Any]:
    """The provider's 404 body for an unknown model id."""
    if api == "anthropic":
        return rs.error_body("anthropic", 404, f"model: {model_id}")
    return {"error": {"message": f"The model '{model_id}' does not exist",
                      "type": "invalid_request_error", "param": "model",
                      "code": "model_not_found"}}


def _openai_model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": OWNER}


def _anthropic_model(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id.replace("-", " ").title(),
            "created_at": CREATED_AT}
