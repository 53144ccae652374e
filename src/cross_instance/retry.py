"""Moved to :mod:`cross_instance.integrations.retry`; this name keeps ported code working."""

from cross_instance.integrations.retry import *  # noqa: F403
from cross_instance.integrations.retry import __all__  # noqa: F401
