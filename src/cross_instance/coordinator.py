"""Moved to :mod:`cross_instance.compat.coordinator`; this name keeps ported code working."""

from cross_instance.compat.coordinator import *  # noqa: F403
from cross_instance.compat.coordinator import __all__  # noqa: F401
