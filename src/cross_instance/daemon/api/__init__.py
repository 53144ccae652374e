"""The public API under ``/v1``: what an agent in any language needs, as JSON over HTTP.

Names are camelCase as in the original coordinator. Ids (instances, workflows, lock
resources) travel in JSON bodies, never in paths, so any text is a valid id. Every request
that changes state may carry ``X-Pi-Request-Id`` (chosen by the client): sent again, it is
applied once. Errors are ``{"code", "message", "retryable", ...}`` (``daemon.wire``).
"""

from __future__ import annotations

# each module adds its routes to the one router on import
from cross_instance.daemon.api import instances, locks, permits, queue, views, workflows
from cross_instance.daemon.api.common import router
from cross_instance.daemon.api.instances import HeartbeatIn, instance_heartbeat
from cross_instance.daemon.api.permits import (
    AcquireIn,
    ReleaseIn,
    ReportIn,
    permit_acquire,
    permit_release,
    permit_report,
)

__all__ = ["AcquireIn", "HeartbeatIn", "ReleaseIn", "ReportIn", "instance_heartbeat", "instances",
           "locks", "permit_acquire", "permit_release", "permit_report", "permits", "queue",
           "router", "views", "workflows"]
