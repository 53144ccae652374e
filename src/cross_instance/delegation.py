"""Moved to :mod:`cross_instance.compat.delegation`; this name keeps ported code working."""

from cross_instance.compat.delegation import *  # noqa: F403
from cross_instance.compat.delegation import __all__  # noqa: F401
