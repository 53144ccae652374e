"""What this instance holds on the strength of its registration (a lock, a run of a queued
task) is surely its own only while the instance itself is: its lease not over, not judged
dead and registered again since, the runtime not closed. A dead instance's locks are freed
and its runs handed on by the store's reap, before their own TTLs or leases end, so a holder
checks both: its own validity, and its instance's (``Tenure.ensure``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from cross_instance.errors import CrossInstanceError

if TYPE_CHECKING:
    from cross_instance.runtime.session import Session


class Tenure:
    """The registration a held thing was acquired under (taken when it was acquired)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        membership = session.membership
        self._generation = None if membership is None else membership.generation

    def gone(self) -> str | None:
        """Why the instance no longer holds what it acquired, as far as this process knows
        without asking the store; None while it may."""
        if self._session.closed:
            return "this runtime closed"
        membership = self._session.membership
        if membership is not None and membership.generation != self._generation:
            return "this instance was judged dead (stalled past its lease) and registered again"
        return None

    def until(self) -> float:
        """Until when (monotonic) the instance's lease surely holds."""
        membership = self._session.membership
        return math.inf if membership is None else membership.valid_until

    def holds(self, valid_until: float) -> bool:
        """Whether a holder whose renewal the store did not answer may still count as
        holding: neither its own validity (``valid_until``, monotonic) nor its instance's
        lease is over (the others free it at the first of the two)."""
        return time.monotonic() < min(valid_until, self.until())

    def ensure(self, valid_until: float, lose: Callable[[str], None],
               what: str = "its lease") -> None:
        """A holder's ``ensure()``: ``lose(reason)`` when its instance no longer holds it, or
        when its own validity (``valid_until``, monotonic: ``what``) ended before a renewal
        came through (the store would refuse a renewal of an expired hold anyway, so it is
        not asked: no wait on a store that may be down). When only its instance's lease may
        have ended, a heartbeat asks. No store call otherwise."""
        gone = self.gone()
        if gone is not None:
            lose(gone)
            return
        if self.holds(valid_until):
            return
        membership = self._session.membership
        if membership is not None and time.monotonic() >= membership.valid_until:
            try:
                membership.confirm()
            except CrossInstanceError as err:
                lose(f"its instance's lease ended and could not be renewed ({err})")
                return
            gone = self.gone()
            if gone is not None:
                lose(gone)
                return
        if time.monotonic() >= valid_until:
            lose(f"{what} ended before a renewal came through")
