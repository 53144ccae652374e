"""The OpenAI Responses API (``POST /v1/responses``): request checks, the ``response`` object and
its SSE event stream. Pure functions.

``input`` is a string or a list of items (messages whose ``content`` is a string or a list of
parts with ``text``, and items such as ``function_call_output`` with a string ``output``);
``instructions`` counts as prompt too. The reply is the fixed text of
:mod:`~cross_instance.testing.fakeprovider.responses`, cut to ``max_output_tokens`` pieces.
Every answer is ``status: "completed"`` and every stream ends with ``response.completed``, also
when the reply was cut: the real API would say ``incomplete`` there, but it never cuts this
reply (its minimum ``max_output_tokens`` is 16, the reply has 14 pieces), and tests that ask
for fewer want the SDK helpers (``get_final_response()``) to finish normally.
"""

from __future__ import annotations

from typing import Any

from cross_instance.testing.fakeprovider import responses as rs


def parse_request(raw: bytes) -> dict[str, Any]:
    """A checked Responses API body, or ``BadRequest``."""
    body = rs.load_object(raw)
    value = body.get("input")
    if not isinstance(value, str | list):
        raise rs.BadRequest("input: field required (string or array of items)")
    if isinstance(value, list) and not all(isinstance(item, dict) for item in value):
        raise rs.BadRequest("input: every item must be an object")
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise rs.BadRequest("instructions: must be a string")
    rs.check_positive("max_output_tokens", body.get("max_output_tokens"))
    return body


def max_output_tokens(body: dict[str, Any]) -> int | None:
    """The reply budget a checked request asked for, if any."""
    value = body.get("max_output_tokens")
    return value if isinstance(value, int) else None


def prompt_tokens(body: dict[str, Any]) -> int:
    """Estimated prompt tokens: ceil(chars of ``instructions`` and ``input`` text / 4)."""
    total = rs.text_len(body.get("instructions"))
    value = body.get("input")
    if isinstance(value, str):
        total += len(value)
    elif isinstance(value, list):
        for item in value:
            total += rs.text_len(item.get("content"))
            output = item.get("output")
            if isinstance(output, str):
                total += len(output)
    return -(-total // 4)


def token_cost(body: dict[str, Any]) -> int:
    """Estimated token cost: prompt tokens + ``max_output_tokens`` (at least 1)."""
    return max(1, prompt_tokens(body) + (max_output_tokens(body) or 0))


def new_ids() -> tuple[str, str]:
    """Fresh ``(response id, message item id)``: ``resp_…`` and ``msg_…``."""
    return "resp_" + rs.random_hex(48), "msg_" + rs.random_hex(48)


def response_object(
    rid: str, msg_id: str, created: int, body: dict[str, Any], n_prompt: int,
    pieces: list[str], truncated: bool,
) -> dict[str, Any]:
    """The finished ``response`` object (non-streamed answer, and the stream's last event);
    ``truncated`` (cut to ``max_output_tokens``) changes only the text and its usage."""
    obj = _shell(rid, created, body, "completed")
    obj["completed_at"] = created
    obj["output"] = [_message(msg_id, "completed", [_text_part("".join(pieces))])]
    obj["usage"] = {
        "input_tokens": n_prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": len(pieces),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": n_prompt + len(pieces),
    }
    return obj


def response_stream(
    rid: str, msg_id: str, created: int, body: dict[str, Any], n_prompt: int,
    pieces: list[str], truncated: bool,
) -> list[bytes]:
    """SSE frames (``event: TYPE`` + ``data: {...}``, numbered by ``sequence_number``):
    response.created, response.in_progress, response.output_item.added,
    response.content_part.added, response.output_text.delta…, response.output_text.done,
    response.content_part.done, response.output_item.done, response.completed, whose
    ``response`` carries ``usage``."""
    final = response_object(rid, msg_id, created, body, n_prompt, pieces, truncated)
    text = "".join(pieces)
    where = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = []

    def add(kind: str, fields: dict[str, Any]) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields})

    shell = _shell(rid, created, body, "in_progress")
    add("response.created", {"response": shell})
    add("response.in_progress", {"response": shell})
    add("response.output_item.added",
        {"output_index": 0, "item": _message(msg_id, "in_progress", [])})
    add("response.content_part.added", {**where, "part": _text_part("")})
    for piece in pieces:
        add("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
    add("response.output_text.done", {**where, "text": text, "logprobs": []})
    add("response.content_part.done", {**where, "part": _text_part(text)})
    add("response.output_item.done", {"output_index": 0, "item": final["output"][0]})
    add("response.completed", {"response": final})
    return [rs.sse(event["type"], event) for event in events]


def _shell(rid: str, created: int, body: dict[str, Any], status: str) -> dict[str, Any]:
    metadata = body.get("metadata")
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": max_output_tokens(body),
        "model": body["model"],
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store") is not False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": metadata if isinstance(metadata, dict) else {},
    }


def _message(msg_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": msg_id, "type": "message", "status": status, "content": content,
            "role": "assistant"}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
