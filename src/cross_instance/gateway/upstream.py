"""The gateway's side toward the providers: one pooled async httpx client per daemon, and
which headers cross in each direction.

Every header of the client's request goes upstream as it came, the caller's API key
included, except what belongs to one hop (``Connection`` and those it names, ``Host``,
``Content-Length``, ``Transfer-Encoding``...), the gateway's own ``X-Pi-*`` headers, and
``Accept-Encoding``, replaced by ``identity`` so the answer's usage can be read as it passes.
Every header of the answer comes back as it came, except what belongs to one hop, ``Date``
and ``Server`` (the gateway's server sends its own).
"""

from __future__ import annotations

import httpx

from cross_instance.core.upstreams import GatewaySettings

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length",
    b"expect", b"proxy-connection"})
_NOT_UPSTREAM = HOP_BY_HOP | {b"accept-encoding"}
_NOT_BACK = HOP_BY_HOP - {b"content-length"} | {b"date", b"server"}


def request_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    named = _named_by_connection(headers)
    out = [(k, v) for k, v in headers
           if k not in _NOT_UPSTREAM and k not in named and not k.startswith(b"x-pi-")]
    out.append((b"accept-encoding", b"identity"))
    return out


def response_headers(headers: list[tuple[bytes, bytes]], streamed: bool
                     ) -> list[tuple[bytes, bytes]]:
    """The answer's headers for the client; ``streamed`` drops ``Content-Length`` (the body
    is passed on as it arrives, in chunks)."""
    named = _named_by_connection(headers)
    return [(k, v) for k, v in headers
            if k not in _NOT_BACK and k not in named
            and not (streamed and k == b"content-length")]


def _named_by_connection(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    named: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            named.update(t.strip().lower() for t in v.split(b","))
    return named


def new_client(settings: GatewaySettings) -> httpx.AsyncClient:
    """The pooled client: keep-alive to every upstream, ``upstreamTimeoutMs`` as the bound on
    connecting and on any silence, no redirects followed (a redirect is the provider's answer
    to pass on), no environment proxies or netrc (the key must go where the config says)."""
    silence = settings.upstream_timeout_ms / 1000
    return httpx.AsyncClient(
        timeout=httpx.Timeout(silence, connect=min(silence, 30.0)),
        limits=httpx.Limits(max_connections=2000, max_keepalive_connections=256,
                            keepalive_expiry=60.0),
        follow_redirects=False, trust_env=False, http2=False)
