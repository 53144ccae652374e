"""Permit ids and wait tickets for every store: random 62-bit numbers from a per-process
generator seeded by the OS (and reseeded in a forked child), so a stale release can never hit
a later permit that reused an id, and two processes never draw the same sequence.

A wait's ticket is chosen by its caller, once per wait, and sent with every attempt of that
wait: an attempt sent twice (its reply lost, the call resent) finds the queue entry and the
grant the first one made, instead of queueing or granting a second time. Two live waits draw
the same ticket with a chance of about n²/2⁶³ for n waits at once."""

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


def new_ticket() -> int:
    """A new wait's ticket (also the id of the permit that wait is granted)."""
    return _ids.getrandbits(62) + 1
