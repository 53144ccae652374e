"""Where the provider gateway sends each provider's requests, and how long it lets them wait.

Pure data. A provider is reachable through the gateway only when it has an upstream here:
the four built-in providers have their official base URLs, any other needs ``baseUrl`` in
the config, so the gateway is never an open proxy. ``api`` says which wire format the
provider speaks, which decides the path mapping and the shape of the errors the gateway
itself answers (a 429 after a bounded wait, an unreachable upstream):

- ``openai``: ``baseUrl`` includes the API version, as ``OPENAI_BASE_URL`` does
  (``https://api.openai.com/v1``); the gateway's ``/{name}/v1/<rest>`` goes to
  ``<baseUrl>/<rest>``.
- ``anthropic``: ``baseUrl`` is the host root, as ``ANTHROPIC_BASE_URL`` is
  (``https://api.anthropic.com``); ``/{name}/v1/<rest>`` goes to ``<baseUrl>/v1/<rest>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Api = Literal["openai", "anthropic"]
APIS: tuple[Api, ...] = ("openai", "anthropic")


@dataclass(frozen=True, slots=True)
class Upstream:
    """One provider's upstream: its wire format and base URL (no trailing slash)."""

    api: Api
    base_url: str

    def url_for(self, rest: str) -> str:
        """The upstream URL of the gateway path ``/{name}/v1/<rest>`` (``rest`` as received,
        still percent-encoded, without a leading slash)."""
        if self.api == "anthropic":
            return f"{self.base_url}/v1/{rest}"
        return f"{self.base_url}/{rest}"


DEFAULT_UPSTREAMS: Mapping[str, Upstream] = MappingProxyType({
    "openai": Upstream("openai", "https://api.openai.com/v1"),
    "anthropic": Upstream("anthropic", "https://api.anthropic.com"),
    "deepseek": Upstream("openai", "https://api.deepseek.com/v1"),
    "gemini": Upstream("openai", "https://generativelanguage.googleapis.com/v1beta/openai"),
})


def default_api(provider: str) -> Api:
    """The wire format a provider without ``api`` in the config speaks."""
    return "anthropic" if provider == "anthropic" else "openai"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """The gateway's bounds (``gateway`` in the config).

    ``max_wait_ms``: the longest a request waits for its permit before the client gets the
    provider's own 429 with ``Retry-After`` (a client may ask for less with the header
    ``X-Pi-Max-Wait-Ms``). ``max_body_bytes``: the largest request body forwarded (images in
    a prompt make bodies large). ``upstream_timeout_ms``: the longest the upstream may stay
    silent (connect, or between two chunks of an answer) before the client gets a 504.
    """

    max_wait_ms: int = 60_000
    max_body_bytes: int = 32 << 20
    upstream_timeout_ms: int = 600_000
