"""Moved to :mod:`cross_instance.testing.fakeprovider`; this name keeps ``python -m
cross_instance.fakeprovider`` and ported imports working."""

from cross_instance.testing.fakeprovider import *  # noqa: F403
from cross_instance.testing.fakeprovider import __all__  # noqa: F401
