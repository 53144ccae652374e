"""The session an agent process holds (``facade.Runtime``) and the machinery a permit runs on:
the step generator and its drivers (``permit_flow``, ``acquire``), hand-over between waiting
processes (``handover``, ``releases``), membership and heartbeats (``membership``), the local
share when the store is down (``degraded``), outcome reports feeding adaptive control
(``feedback``) and the line logs under ``.pi/logs/`` (``logs``)."""

from cross_instance.runtime.facade import Runtime
from cross_instance.runtime.permit import Permit

__all__ = ["Permit", "Runtime"]
