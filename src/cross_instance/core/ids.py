"""Instance ids: ``{hostname}-{pid}-{start ms}`` when not given, validated when given."""

from __future__ import annotations

import re

INSTANCE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def generate_instance_id(hostname: str, pid: int, start_ms: int) -> str:
    """The seed's id format; characters outside the id alphabet in the host name become '-'."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", hostname).strip("-.") or "host"
    return f"{host[:80]}-{pid}-{start_ms}"


def is_valid_instance_id(value: str) -> bool:
    return bool(INSTANCE_ID_PATTERN.fullmatch(value))
