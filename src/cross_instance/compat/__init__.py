"""The original coordinator's API, kept for code ported from it and built on the facade:
its registry and limit functions (``seed``), its module-level functions on one process-wide
runtime (``coordinator``) and its delegation-tool guard (``delegation``)."""
