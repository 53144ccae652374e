"""Named crash points for fault tests: ``PI_XI_CRASHPOINT=<name>[:n]`` makes the n-th pass
(default 1st) through ``crash_at(name)`` end the process with ``os._exit(137)``.

Read once at import; when unset, ``crash_at`` is a no-op costing one comparison.

Points: ``sqlite.<op>.before_commit`` / ``sqlite.<op>.after_commit`` around every named
SQLite transaction (``db.Database.write``: register, heartbeat, reap, acquire, release,
claim, release_workflow, write_state, acquire_lock, renew_lock, release_lock, ...), and
``redis.<operation>.before_send`` / ``redis.<operation>.after_reply`` around every Redis call,
named by its Lua operation (``register``, ``heartbeat``, ``reap``, ``release_workflow``,
``permit_release``, ``lock_renew``, ``workflow_write``, ...). An operation runs whole or not at
all, so these are its only two places.
"""

from __future__ import annotations

import os

_spec = os.environ.get("PI_XI_CRASHPOINT", "")
_name, _, _count = _spec.partition(":")
_remaining = int(_count) if _count.isdigit() else 1
ACTIVE = bool(_name)


def crash_at(name: str) -> None:
    global _remaining
    if not ACTIVE:
        return
    if name == _name:
        _remaining -= 1
        if _remaining <= 0:
            os._exit(137)
