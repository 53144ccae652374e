"""Read-only views of the shared state, the same for ``rt.status()``, ``pi-xi status`` and
``pi-xi limits``: who is registered and what it holds (``status``), and each limit's
configured, learned and used values (``limits``)."""
