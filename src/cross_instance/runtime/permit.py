"""A held permit: rate tokens already spent and one concurrency slot, until released.

Use it as a context manager (``with`` or ``async with``); ``release()`` is idempotent. If the
process dies instead, the slot comes back when the instance is judged dead (same host: as soon
as another instance looks; otherwise within the heartbeat timeout).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from cross_instance.core.arguments import check_report
from cross_instance.errors import PermitRequestError

if TYPE_CHECKING:
    from cross_instance.runtime.spending import Reservation


class Releaser(Protocol):
    """Where a permit gives its slot back: ``slots.Slots`` for the store's permits,
    ``degraded.LocalShare`` for the local share's."""

    def release(self, permit_id: int) -> None:
        ...

    async def arelease(self, permit_id: int) -> None:
        ...


class Reporter(Protocol):
    """Where a permit's ``report`` goes: ``feedback.Reports``."""

    def report(self, permit: Permit, status: int | None, headers: Any,
               body: bytes | str | None, error: BaseException | None,
               usage_tokens: int | None, detail: Any = None) -> None:
        ...


class Permit:
    """Permission for one LLM call to ``provider`` (and ``model``), holding ``tokens``."""

    __slots__ = (
        "_releaser",
        "_reporter",
        "granted_at",
        "granted_ns",
        "model",
        "permit_id",
        "provider",
        "released",
        "request",
        "spend",
        "tokens",
        "waited_s",
    )

    def __init__(self, provider: str, model: str | None, tokens: int, permit_id: int,
                 waited_s: float, releaser: Releaser | None,
                 granted_ns: int = 0, reporter: Reporter | None = None,
                 request: object = None, spend: Reservation | None = None) -> None:
        self.provider = provider
        self.model = model
        self.tokens = tokens
        self.permit_id = permit_id
        self.granted_at = time.monotonic()
        self.granted_ns = granted_ns  # on the store's clock: when the limit counted this call
        self.waited_s = waited_s
        self._releaser = releaser
        self._reporter = reporter
        self.request = request  # what the permit took (a PermitRequest), for reports
        self.spend = spend  # the spend budgets' reservation, settled by the report
        self.released = False

    def release(self) -> None:
        """Give the slot back (rate tokens stay spent). Safe to call twice."""
        if self.released:
            return
        self.released = True
        if self._releaser is not None:
            self._releaser.release(self.permit_id)

    def report(self, status: int | None = None, headers: Any = None,
               usage_tokens: int | None = None, *, body: bytes | str | None = None,
               error: BaseException | None = None) -> None:
        """Tell the shared controller what the call met: the HTTP ``status`` with the
        response ``headers`` (and ``body`` for Gemini's 429 details), or the SDK ``error``
        that carries them; ``usage_tokens`` (the real usage) reconciles the ``tokens=``
        estimate: the difference is refunded or charged. 429s and cooldowns reach every
        instance; malformed header values are ignored, while an argument of the wrong kind
        raises ``PermitRequestError`` naming it. Call it before or after ``release()``."""
        check_report(status, headers, body, error, usage_tokens, PermitRequestError)
        if self._reporter is not None:
            self._reporter.report(self, status, headers, body, error, usage_tokens)

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    async def __aenter__(self) -> Permit:
        return self

    async def arelease(self) -> None:
        """``release()`` without blocking the event loop."""
        if self.released:
            return
        self.released = True
        if self._releaser is not None:
            await self._releaser.arelease(self.permit_id)

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.arelease()

    def __repr__(self) -> str:
        state = "released" if self.released else "held"
        target = self.provider if self.model is None else f"{self.provider}/{self.model}"
        return f"<Permit {self.permit_id} {target} tokens={self.tokens} {state}>"
