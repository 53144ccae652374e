"""The tokens a gateway request may use, read from its body before it is forwarded.

An estimate (text / 4, plus the output the request allows) for the token buckets, settled
with the provider's own ``usage`` once the answer is in. Understood bodies: chat completions
and Anthropic messages (``messages``, ``system``), the Responses API (``input``,
``instructions``, ``max_output_tokens``) and embeddings (``input``: text, texts or token
arrays). Anything else is ``None`` (no token reservation), never an error.
"""

from __future__ import annotations

from typing import Any

from cross_instance.core.usage import CHARS_PER_TOKEN, text_length

_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _count(value: Any) -> int:
    """Characters of text, or 4 per token of a token array (so / 4 gives the tokens)."""
    if isinstance(value, list) and value and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return len(value) * CHARS_PER_TOKEN
    if isinstance(value, list):
        return sum(_count(v) for v in value)
    return text_length(value)


def request_parts(body: Any) -> tuple[int, int] | None:
    """(prompt tokens, output tokens allowed) of ``body``, or ``None`` when it is not a
    request the estimate reads. The output allowance is 0 when the body sets none."""
    if not isinstance(body, dict):
        return None
    output = next((body[f] for f in _OUTPUT_FIELDS
                   if isinstance(body.get(f), int) and not isinstance(body.get(f), bool)
                   and body[f] > 0), 0)
    if isinstance(body.get("messages"), list):
        chars = text_length(body["messages"]) + text_length(body.get("system"))
    elif "input" in body:
        chars = _count(body["input"]) + text_length(body.get("instructions"))
    else:
        return None
    return -(-chars // CHARS_PER_TOKEN), output


def request_tokens(body: Any) -> int | None:
    """Tokens ``body`` may use, or ``None`` when it is not a request the estimate reads
    (the same as ``core.usage.estimate_tokens`` for chat and messages)."""
    parts = request_parts(body)
    return None if parts is None else parts[0] + parts[1]
