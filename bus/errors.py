"""Errors raised by superpool.

Every error derives from `SuperpoolError`, so a caller can catch the whole
family in one place (the CLI does, and prints `Name: message`):

    SuperpoolError
    ├── ConfigError            a setting or the model catalog is invalid
    ├── ServerLaunchError      the embedded nats-server could not start
    ├── ProvisioningError      a stream, consumer or bucket cannot be made to match
    ├── InvalidRequestError    a run request broke a rule (status INVALID_REQUEST)
    │   └── PathRejectedError  a path failed the workspace check
    ├── AdapterError           an adapter or its provider failed (status RUN_FAILED)
    └── PoolError              the pool could not be reached or asked
"""

from __future__ import annotations


class SuperpoolError(Exception):
    """Base class of every error that superpool raises on purpose."""


class ConfigError(SuperpoolError):
    """A setting has an invalid value."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class ServerLaunchError(SuperpoolError):
    """The embedded nats-server did not start or answered too late."""


class ProvisioningError(SuperpoolError):
    """A stream, consumer or bucket exists with a config that cannot be changed."""

    def __init__(self, resource: str, message: str) -> None:
        super().__init__(message)
        self.resource = resource


class InvalidRequestError(SuperpoolError):
    """A run request broke a rule; the caller has to fix it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PathRejectedError(InvalidRequestError):
    """A path is outside the workspace roots or unsafe to use."""

    def __init__(self, path: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.path = path


class AdapterError(SuperpoolError):
    """An adapter failed to produce an answer."""

    def __init__(self, adapter: str, message: str) -> None:
        super().__init__(message)
        self.adapter = adapter


class PoolError(SuperpoolError):
    """The pool did not respond, or responded with an error."""
