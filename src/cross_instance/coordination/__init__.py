"""Coordination beyond permits: workflow ownership with fencing epochs (``workflows``, seed
002) and TTL locks with fencing tokens (``locks``, seed 001), as the parts ``rt.workflows``
and ``rt.locks`` of a runtime."""
