"""OpenAI embeddings (``POST /v1/embeddings``): request checks, token counts and deterministic
vectors. Pure functions.

``input`` is a non-empty string, a list of them, a list of token ids or a list of token-id
lists (at most 2048 inputs). Each input gets a unit-length vector of ``dimensions`` float32
values (default 8) derived from a hash of that input alone, so equal inputs embed equally.
``encoding_format: "base64"`` sends the little-endian float32 bytes in base64, as the real
API does. A string costs ceil(chars / 4) tokens (at least 1), a token list its length.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import Any

from cross_instance.testing.fakeprovider import responses as rs

DEFAULT_DIMENSIONS = 8
MAX_DIMENSIONS = 4096
MAX_INPUTS = 2048

Item = str | list[int]


def parse_request(raw: bytes) -> dict[str, Any]:
    """A checked embeddings body, or ``BadRequest``."""
    body = rs.load_object(raw)
    inputs(body)
    dims = body.get("dimensions")
    rs.check_positive("dimensions", dims)
    if isinstance(dims, int) and dims > MAX_DIMENSIONS:
        raise rs.BadRequest(f"dimensions: at most {MAX_DIMENSIONS}")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise rs.BadRequest("encoding_format: must be 'float' or 'base64'")
    return body


def inputs(body: dict[str, Any]) -> list[Item]:
    """The inputs of a request, one per vector, or ``BadRequest``."""
    value = body.get("input")
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and 0 < len(value) <= MAX_INPUTS:
        if all(_is_token(t) for t in value):
            return [value]
        if all(isinstance(s, str) and s for s in value):
            return list(value)
        if all(isinstance(ts, list) and ts and all(_is_token(t) for t in ts) for ts in value):
            return list(value)
    raise rs.BadRequest(
        "input: must be a non-empty string, an array of them, an array of token ids or an "
        f"array of token-id arrays (at most {MAX_INPUTS} inputs)")


def prompt_tokens(body: dict[str, Any]) -> int:
    """Tokens of all inputs of a checked request."""
    return sum(_tokens(item) for item in inputs(body))


def token_cost(body: dict[str, Any]) -> int:
    """Token cost for the limiter: the input tokens (at least 1)."""
    return max(1, prompt_tokens(body))


def vector(item: Item, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """A unit-length vector of ``dimensions`` float32 values determined by ``item`` alone."""
    seed = json.dumps(item).encode()
    raw = b"".join(hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
                   for counter in range(-(-dimensions // 8)))
    ints = struct.unpack(f">{dimensions}I", raw[:4 * dimensions])
    values = [i / 2**31 - 1.0 for i in ints]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return list(struct.unpack(f"<{dimensions}f",
                              struct.pack(f"<{dimensions}f", *(v / norm for v in values))))


def embedding_list(body: dict[str, Any]) -> dict[str, Any]:
    """The ``list`` of ``embedding`` objects answering a checked request."""
    dims = body.get("dimensions") or DEFAULT_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    n_tokens = 0
    for index, item in enumerate(inputs(body)):
        n_tokens += _tokens(item)
        vec = vector(item, dims)
        encoded: Any = (base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
                        if as_base64 else vec)
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {"object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tokens(item: Item) -> int:
    return max(1, -(-len(item) // 4)) if isinstance(item, str) else len(item)
