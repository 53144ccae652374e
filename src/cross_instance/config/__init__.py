"""Configuration: ``.pi/config.json`` (key ``crossInstance``) plus ``PI_*`` environment
overrides, loaded into one immutable, validated :class:`Config` (``load``); the rules each
value must follow (``rules``) and the pydantic schema that applies them (``schema``, imported
only when a file or an override is validated)."""

from cross_instance.config.load import *  # noqa: F403 - the public names, listed once there
from cross_instance.config.load import __all__  # noqa: F401
