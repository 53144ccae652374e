"""The gateway's side toward the providers: one pooled aiohttp session per daemon, and which
headers cross in each direction.

Why aiohttp and not httpx: the upstream request is most of what the gateway costs. Measured
on this project's 2-core machine against the fake provider, one request costs httpx's
``AsyncClient`` about 1,450 µs of CPU and aiohttp's ``ClientSession`` about 330 µs
(``benchmarks/bench_gateway.py`` has the whole comparison). At 1,000 requests/s the first
alone would take one and a half cores.

Every header of the client's request goes upstream as it came, the caller's API key
included, except what belongs to one hop (``Connection`` and those it names, ``Host``,
``Content-Length``, ``Transfer-Encoding``...), the gateway's own ``X-Pi-*`` headers, and
``Accept-Encoding``, replaced by ``identity`` so the answer's usage can be read as it passes.
Nothing is added but ``Host`` and ``Content-Length``. Every header of the answer comes back as
it came, except what belongs to one hop, ``Date`` and ``Server`` (the gateway's server sends
its own).
"""

from __future__ import annotations

import aiohttp
from multidict import CIMultiDict

from cross_instance.core.upstreams import GatewaySettings

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length",
    b"expect", b"proxy-connection"})
_NOT_UPSTREAM = HOP_BY_HOP | {b"accept-encoding"}
_NOT_BACK = (HOP_BY_HOP - {b"content-length"}) | {b"date", b"server"}
_AUTO = frozenset({"User-Agent", "Accept-Encoding", "Content-Type", "Accept"})

#: The errors of an upstream request: it timed out (``TIMEOUT``) or failed otherwise.
TIMEOUT = TimeoutError
UpstreamError = aiohttp.ClientError
Response = aiohttp.ClientResponse


def request_headers(headers: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    named = _named_by_connection(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in headers:
        if k not in _NOT_UPSTREAM and k not in named and not k.startswith(b"x-pi-"):
            out.add(k.decode("latin-1"), v.decode("latin-1"))
    out["accept-encoding"] = "identity"
    return out


def response_headers(raw: tuple[tuple[bytes, bytes], ...], streamed: bool
                     ) -> list[tuple[bytes, bytes]]:
    """The answer's headers for the client (names lower-cased, as ASGI wants them);
    ``streamed`` drops ``Content-Length`` (the body is passed on as it arrives)."""
    lowered = [(k.lower(), v) for k, v in raw]
    named = _named_by_connection(lowered)
    return [(k, v) for k, v in lowered
            if k not in _NOT_BACK and k not in named
            and not (streamed and k == b"content-length")]


def _named_by_connection(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    named: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            named.update(t.strip().lower() for t in v.split(b","))
    return named


class Upstreams:
    """The pooled session (made on first use, on the event loop): keep-alive to every
    upstream, ``upstreamTimeoutMs`` as the bound on connecting and on any silence, no
    redirects followed (a redirect is the provider's answer to pass on), bodies passed as
    they are (no decompression), no cookie jar (the session serves every client), no
    environment proxies or netrc (the key must go where the config says)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            silence = self.settings.upstream_timeout_ms / 1000
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=2000, limit_per_host=0,
                                               keepalive_timeout=60, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(silence, 30.0),
                                              sock_read=silence),
                auto_decompress=False, trust_env=False, skip_auto_headers=_AUTO,
                # one client's Set-Cookie must never ride on another client's request
                cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def send(self, method: str, url: str, headers: CIMultiDict[str], body: bytes
                   ) -> Response:
        """The answer, its body not read yet (``TIMEOUT`` or ``UpstreamError``)."""
        return await self.session().request(method, url, headers=headers, data=body or None,
                                            allow_redirects=False, compress=None,
                                            chunked=None, expect100=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
