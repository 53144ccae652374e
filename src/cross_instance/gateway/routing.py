"""Which gateway route a request path names: ``/{provider}/v1/<rest>``.

Promises: a route is found only for a provider with an upstream in the config (the gateway
is no open proxy); ``rest`` is passed on as received (still percent-encoded, with the query
string), so the upstream sees the client's own path; a path that would climb out of the
provider's base URL (a ``.`` or ``..`` segment, raw or percent-encoded) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from cross_instance.core.upstreams import Upstream

#: The daemon's own routes: never a provider's.
DAEMON_SEGMENTS = frozenset({"v1", "metrics", ""})


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    upstream: Upstream
    rest: str  # after /{provider}/v1/, percent-encoded as received, without the query

    @property
    def url(self) -> str:
        return self.upstream.url_for(self.rest)


class NotConfigured(Exception):
    """A provider-shaped path for a provider with no upstream in the config."""

    def __init__(self, provider: str) -> None:
        super().__init__(
            f"provider {provider!r} is not configured for the gateway: give it a baseUrl "
            f"(crossInstance.providers.{provider}.baseUrl) in .pi/config.json")
        self.provider = provider


class BadPath(Exception):
    """A path the gateway will not forward."""


def provider_segment(path: str) -> str | None:
    """The first segment of a gateway-shaped path (``/{x}/v1/...``), else None."""
    parts = path.split("/", 3)
    if len(parts) < 4 or parts[0] != "" or parts[2] != "v1" or parts[1] in DAEMON_SEGMENTS:
        return None
    return parts[1]


def route_of(raw_path: bytes, upstreams: Mapping[str, Upstream]) -> Route | None:
    """The route of ``raw_path`` (the request target's path, percent-encoded), None when it is
    not gateway-shaped; ``NotConfigured`` or ``BadPath`` when it is but cannot be forwarded."""
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = text.split("/", 3)
    if len(parts) < 4 or parts[0] != "" or parts[2] != "v1":
        return None
    name = unquote(parts[1])
    if name in DAEMON_SEGMENTS:
        return None
    upstream = upstreams.get(name)
    if upstream is None:
        raise NotConfigured(name)
    rest = parts[3]
    for segment in rest.split("/"):
        if unquote(segment) in (".", ".."):
            raise BadPath(f"path segment {segment!r} is not allowed")
    return Route(name, upstream, rest)
