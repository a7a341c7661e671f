"""Adapters by name: the code that turns one run into one model call.

This package imports no provider SDK. The claude and gemini adapters import
theirs on their first run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from bus.errors import InvalidRequestError
from runner.adapters.base import Adapter
from runner.adapters.claude import ClaudeAdapter
from runner.adapters.echo import EchoAdapter
from runner.adapters.gemini import GeminiAdapter

_FACTORIES: dict[str, Callable[[], Adapter]] = {
    "claude": ClaudeAdapter,
    "gemini": GeminiAdapter,
    "echo": EchoAdapter,
}
ADAPTER_NAMES = tuple(_FACTORIES)


@functools.cache
def get_adapter(name: str) -> Adapter:
    """Return the shared adapter instance called `name`.

    Raises:
        InvalidRequestError: no adapter has that name.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise InvalidRequestError(
            f"adapter {name!r} is unknown: use one of {', '.join(ADAPTER_NAMES)}",
            field="adapter",
        )
    return factory()
