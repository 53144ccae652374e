"""Token counts of a provider call read from its own request and response, pure.

Why: a coordinated client has to reserve tokens before a call (against tokens per minute) and
settle them after, without the user writing either number. The reservation is an *estimate*
(prompt characters / 4, plus the output the request allows); the settlement is the provider's
own ``usage``, exact. Both are best effort: anything unreadable gives ``None`` and nothing is
settled, never an error.

Understood shapes: OpenAI-style ``usage.total_tokens`` (also DeepSeek) or
``prompt_tokens + completion_tokens``; Anthropic ``usage.input_tokens + output_tokens`` (plus
``cache_creation_input_tokens``, which the provider counts against input limits); Gemini
``usageMetadata.totalTokenCount``; and the server-sent-event streams of OpenAI (a final chunk
with ``usage`` when ``stream_options.include_usage`` is set) and Anthropic (``message_start``
then cumulative ``message_delta`` usage).
"""

from __future__ import annotations

import json
from typing import Any

CHARS_PER_TOKEN = 4
_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _text_length(value: Any) -> int:
    """Characters of text in a message value (strings, lists, the ``content``/``text`` of
    objects)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(v) for v in value)
    if isinstance(value, dict):
        return sum(_text_length(v) for k, v in value.items() if k in ("content", "text"))
    return 0


def _input_length(value: Any) -> int:
    """Characters of an ``input`` (Responses API, embeddings): text, texts, or token arrays
    (4 characters per token, so / 4 gives the tokens back)."""
    if isinstance(value, list) and value and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return len(value) * CHARS_PER_TOKEN
    if isinstance(value, list):
        return sum(_input_length(v) for v in value)
    return _text_length(value)


def estimate_parts(body: Any) -> tuple[int, int] | None:
    """(prompt tokens, output tokens allowed) of a request body: chat completions and
    Anthropic messages (``messages``, ``system``), the Responses API (``input``,
    ``instructions``) and embeddings (``input``); the output allowance is the first of
    ``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` set, else 0. ``None``
    for any other body."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("messages"), list):
        chars = _text_length(body["messages"]) + _text_length(body.get("system"))
    elif "input" in body:
        chars = _input_length(body["input"]) + _text_length(body.get("instructions"))
    else:
        return None
    output = next((body[f] for f in _OUTPUT_FIELDS
                   if isinstance(body.get(f), int) and not isinstance(body.get(f), bool)
                   and body[f] > 0), 0)
    return -(-chars // CHARS_PER_TOKEN), output


def estimate_tokens(body: Any) -> int | None:
    """Tokens a completion request body (``messages``) may use: its text / 4 plus the output
    limit it sets; ``None`` when the body is not a completion request."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return None
    parts = estimate_parts(body)
    return None if parts is None else parts[0] + parts[1]


def _count(usage: Any, *names: str) -> int | None:
    if not isinstance(usage, dict):
        return None
    values = [usage.get(n) for n in names]
    if not any(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    return sum(v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0)


def _from_object(data: Any) -> int | None:
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if isinstance(usage, dict):
        if isinstance(usage.get("total_tokens"), int):
            return _count(usage, "total_tokens")
        return (_count(usage, "prompt_tokens", "completion_tokens")
                or _count(usage, "input_tokens", "output_tokens", "cache_creation_input_tokens"))
    return _count(data.get("usageMetadata"), "totalTokenCount")


def _from_events(text: str) -> int | None:
    prompt = output = None
    total = None
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        try:
            event = json.loads(line[5:].strip())
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
            usage = event["message"].get("usage")
            prompt = _count(usage, "input_tokens", "cache_creation_input_tokens")
            output = _count(usage, "output_tokens")
        elif event.get("type") == "message_delta":  # counts so far, not increments
            output = _count(event.get("usage"), "output_tokens") or output
            prompt = _count(event.get("usage"), "input_tokens",
                            "cache_creation_input_tokens") or prompt
        else:
            total = _from_object(event) or total
    if prompt is not None or output is not None:
        return (prompt or 0) + (output or 0)
    return total


def usage_from_body(body: bytes, content_type: str) -> int | None:
    """The tokens a response says its call used, from a JSON body or an event stream."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "event-stream" in content_type:
        return _from_events(text)
    try:
        return _from_object(json.loads(text))
    except ValueError:
        return None
