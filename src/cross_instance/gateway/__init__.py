"""The provider gateway: any agent (pi, aider, Codex CLI, curl) coordinated by pointing its
base URL at ``pi-xi serve``: ``OPENAI_BASE_URL=http://127.0.0.1:8765/openai/v1``,
``ANTHROPIC_BASE_URL=http://127.0.0.1:8765/anthropic``, and the same form for any provider
in the config (``/{name}/v1``). It lives in the daemon's process and app (``Gateway``, an
ASGI layer in front of the daemon's routes), sharing its store, token rule, events and
metrics. See ``forward`` for what it promises.
"""

from cross_instance.gateway.forward import Gateway

__all__ = ["Gateway"]
