"""Moved to :mod:`cross_instance.runtime.acquire`. ``cross_instance.acquire.Cancelled``, which
an earlier README documented, keeps working: it is :class:`cross_instance.Cancelled`."""

from cross_instance.errors import Cancelled

__all__ = ["Cancelled"]
