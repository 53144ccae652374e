"""Permit ids for every store: random 62-bit numbers from a per-process generator seeded by
the OS (and reseeded in a forked child), so a stale release can never hit a later permit that
reused an id, and two processes never draw the same sequence."""

from __future__ import annotations

import os
import random

_ids = random.Random()


def _reseed() -> None:
    _ids.seed(os.urandom(32))


_reseed()
if hasattr(os, "register_at_fork"):  # POSIX only (no fork on Windows)
    os.register_at_fork(after_in_child=_reseed)


def new_permit_id() -> int:
    return _ids.getrandbits(62) + 1
