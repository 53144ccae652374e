"""The coordinator daemon's client: a ``Store`` whose every operation is a request to
``pi-xi serve`` (``PI_COORDINATOR_ADDR=host:port``)."""
