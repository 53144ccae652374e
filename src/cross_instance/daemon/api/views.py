"""What ``pi-xi status --json`` and ``pi-xi limits --json`` print, over HTTP."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from cross_instance.daemon.api.common import (
    daemon_of,
    router,
)


@router.get("/status", tags=["status"])
async def status(request: Request) -> dict[str, Any]:
    """What ``pi-xi status --json`` prints."""
    from cross_instance.views.status import build_status

    daemon = daemon_of(request)
    return await daemon.run(build_status, daemon.store, daemon.config)


@router.get("/limits", tags=["status"])
async def limits(request: Request, provider: str | None = None) -> dict[str, Any]:
    """What ``pi-xi limits --json`` prints (``provider``: only that one)."""
    from cross_instance.views.limits import build_limits, read_budgets
    from cross_instance.views.status import build_status

    daemon = daemon_of(request)
    view = await daemon.run(build_status, daemon.store, daemon.config)
    budgets = await daemon.run(read_budgets, daemon.store, daemon.config)
    return build_limits(daemon.config, view, provider, budgets)
