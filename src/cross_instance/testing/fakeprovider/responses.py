"""Provider-shaped request checks, reply bodies, stream events and error bodies. Pure functions.

Bodies follow the public OpenAI Chat Completions and Anthropic Messages (and token counting)
wire formats closely enough for the official ``openai`` and ``anthropic`` SDKs to parse them.
The reply text is fixed; it is cut to ``max_tokens`` pieces (one piece = one "token"), with the
matching finish reason. The other routes' modules reuse the JSON, SSE and text helpers here.
"""

from __future__ import annotations

import json
import random
from typing import Any, Literal

Api = Literal["openai", "anthropic"]

REPLY_TEXT = "Hello! This is a reply from the local fake provider. Nothing here is real."

_WORDS = REPLY_TEXT.split(" ")
_PIECES = (*(w + " " for w in _WORDS[:-1]), _WORDS[-1])
_ID_BITS = random.Random()  # ids must differ, not be secret; uuid4's os.urandom drops the GIL


class BadRequest(ValueError):
    """The request body is not acceptable; ``str(err)`` is the message sent back."""


def load_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw`` with a string ``model``, or ``BadRequest``."""
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if not isinstance(body.get("model"), str):
        raise BadRequest("model: field required (string)")
    return body


def check_positive(name: str, value: Any) -> None:
    """``BadRequest`` unless ``value`` is ``None`` or a positive integer (``name`` is the field)."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise BadRequest(f"{name}: must be a positive integer")


def parse_request(api: Api, raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``, checked for the fields ``api`` requires, or ``BadRequest``."""
    body = load_object(raw)
    if not isinstance(body.get("messages"), list):
        raise BadRequest("messages: field required (array)")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if api == "anthropic" and max_tokens is None:
        raise BadRequest("max_tokens: field required")
    check_positive("max_tokens", max_tokens)
    return body


def parse_count_tokens(raw: bytes) -> dict[str, Any]:
    """A checked Anthropic ``/v1/messages/count_tokens`` body (``max_tokens`` is not needed)."""
    body = load_object(raw)
    if not isinstance(body.get("messages"), list):
        raise BadRequest("messages: field required (array)")
    return body


def max_tokens_of(body: dict[str, Any]) -> int | None:
    """The completion budget a checked request asked for, if any."""
    value = body.get("max_tokens", body.get("max_completion_tokens"))
    return value if isinstance(value, int) else None


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters of text in the prompt: message contents (strings or text parts) and system."""
    total = text_len(body.get("system"))
    for message in body.get("messages", []):
        if isinstance(message, dict):
            total += text_len(message.get("content"))
    return total


def prompt_tokens(body: dict[str, Any]) -> int:
    """Estimated prompt tokens: ceil(prompt chars / 4)."""
    return -(-prompt_chars(body) // 4)


def token_cost(body: dict[str, Any]) -> int:
    """Estimated token cost of a request: prompt tokens + max_tokens (at least 1)."""
    return max(1, prompt_tokens(body) + (max_tokens_of(body) or 0))


def reply_pieces(max_tokens: int | None) -> tuple[list[str], bool]:
    """The reply cut into pieces (at most ``max_tokens``), and whether it was truncated."""
    if max_tokens is not None and max_tokens < len(_PIECES):
        return list(_PIECES[:max_tokens]), True
    return list(_PIECES), False


def random_hex(digits: int) -> str:
    """``digits`` random lowercase hex digits (for ids)."""
    return f"{_ID_BITS.getrandbits(4 * digits):0{digits}x}"


def new_id(api: Api) -> str:
    """A fresh id in the provider's style (``chatcmpl-…`` or ``msg_…``)."""
    return ("chatcmpl-" if api == "openai" else "msg_") + random_hex(24)


def openai_completion(
    rid: str, model: str, created: int, n_prompt: int, pieces: list[str], truncated: bool
) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "".join(pieces), "refusal": None},
            "finish_reason": "length" if truncated else "stop",
            "logprobs": None,
        }],
        "usage": _openai_usage(n_prompt, len(pieces)),
        "system_fingerprint": None,
    }


def openai_stream(
    rid: str, model: str, created: int, n_prompt: int, pieces: list[str], truncated: bool,
    include_usage: bool,
) -> list[bytes]:
    """SSE frames of a ``chat.completion.chunk`` stream, ending with ``data: [DONE]``."""
    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"id": rid, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [choice]}

    events = [chunk({"role": "assistant", "content": ""}, None)]
    events += [chunk({"content": piece}, None) for piece in pieces]
    events.append(chunk({}, "length" if truncated else "stop"))
    if include_usage:
        events.append({"id": rid, "object": "chat.completion.chunk", "created": created,
                       "model": model, "choices": [],
                       "usage": _openai_usage(n_prompt, len(pieces))})
    return [sse(None, e) for e in events] + [b"data: [DONE]\n\n"]


def anthropic_message(
    rid: str, model: str, n_prompt: int, pieces: list[str], truncated: bool
) -> dict[str, Any]:
    """A Messages API ``message`` object."""
    return {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "".join(pieces)}],
        "model": model,
        "stop_reason": "max_tokens" if truncated else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": n_prompt, "output_tokens": len(pieces)},
    }


def anthropic_stream(
    rid: str, model: str, n_prompt: int, pieces: list[str], truncated: bool
) -> list[bytes]:
    """SSE frames: message_start, content_block_start, content_block_delta…, content_block_stop,
    message_delta, message_stop (each as ``event: X`` + ``data: {...}``)."""
    start = anthropic_message(rid, model, n_prompt, [], False)
    start.update(content=[], stop_reason=None, usage={"input_tokens": n_prompt, "output_tokens": 0})
    frames = [
        sse("message_start", {"type": "message_start", "message": start}),
        sse("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
    ]
    frames += [
        sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": piece}})
        for piece in pieces
    ]
    stop_reason = "max_tokens" if truncated else "end_turn"
    frames += [
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                               "usage": {"output_tokens": len(pieces)}}),
        sse("message_stop", {"type": "message_stop"}),
    ]
    return frames


def error_body(api: Api, status: int, message: str) -> dict[str, Any]:
    """The provider's error object for ``status`` (429, 400, 404, …)."""
    if api == "anthropic":
        kind = {429: "rate_limit_error", 400: "invalid_request_error",
                404: "not_found_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if status == 429:
        return {"error": {"message": message, "type": "requests", "param": None,
                          "code": "rate_limit_exceeded"}}
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _openai_usage(n_prompt: int, n_completion: int) -> dict[str, int]:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
            "total_tokens": n_prompt + n_completion}


def sse(event: str | None, data: dict[str, Any]) -> bytes:
    """One SSE frame: ``event: NAME`` (when given) and compact ``data: {...}``."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def text_len(content: Any) -> int:
    """Characters of text in a message content: a string, or the ``text`` of its parts."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p["text"]) for p in content
                   if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0
