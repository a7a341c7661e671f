"""Connect to NATS with bounded waits and logged connection events."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
from nats.aio.client import Client as NATS

from bus.credentials import connect_options
from bus.errors import PoolError
from bus.settings import Settings

logger = logging.getLogger(__name__)

# A hung server (socket open, no answers) is noticed after about
# PING_INTERVAL_S * MAX_OUTSTANDING_PINGS instead of nats-py's default of minutes.
PING_INTERVAL_S = 5.0
MAX_OUTSTANDING_PINGS = 2
RECONNECT_WAIT_S = 0.5
# nats-py counts this per server; -1 keeps a long-running process reconnecting
# for as long as it lives, while each request keeps its own timeout.
MAX_RECONNECT_ATTEMPTS = -1
# The server's error texts for a rejected login and a refused subject.
AUTHORIZATION_VIOLATION = "authorization violation"
PERMISSIONS_VIOLATION = "permissions violation"
# Bytes that nats-py buffers while disconnected before publishes fail.
PENDING_BUFFER_BYTES = 2 * 1024 * 1024


async def connect(settings: Settings, *, name: str, **options: Any) -> NATS:
    """Open a NATS connection, or raise `PoolError` within `request_timeout`.

    nats-py retries the first connect to a refused port without end, whatever
    `max_reconnect_attempts` says, so the whole attempt runs under a deadline.
    """

    rejected: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        text = str(exc).lower()
        if AUTHORIZATION_VIOLATION in text:
            rejected.append(exc)
        if PERMISSIONS_VIOLATION in text:
            # The server refused one publish or subscription and keeps the
            # connection, so this is the only sign of a missing permission.
            logger.warning("nats permission denied name=%s error=%s", name, exc)
            return
        logger.debug("nats connection error name=%s error=%r", name, exc)

    async def on_disconnected() -> None:
        # nats-py calls this on a deliberate close too, after marking it closed.
        if not nc.is_closed:
            logger.warning("nats disconnected name=%s", name)

    async def on_reconnected() -> None:
        logger.warning("nats reconnected name=%s url=%s", name, nc.connected_url)

    # nats-py annotates these times as int, but it takes seconds as float.
    arguments: dict[str, Any] = {
        "name": name,
        "connect_timeout": settings.request_timeout,
        "ping_interval": PING_INTERVAL_S,
        "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
        "reconnect_time_wait": RECONNECT_WAIT_S,
        "max_reconnect_attempts": MAX_RECONNECT_ATTEMPTS,
        "pending_size": PENDING_BUFFER_BYTES,
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
        **connect_options(settings),
    }
    arguments.update(options)
    nc = NATS()
    try:
        await asyncio.wait_for(
            nc.connect(server_urls(settings.nats_url), **arguments),
            timeout=settings.request_timeout,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await _close_quietly(nc)
        if rejected:
            # nats-py retries a rejected login until the deadline, which
            # would hide the cause behind a timeout. nats-py 2.16 reports it
            # as a plain nats.errors.Error("nats: 'Authorization Violation'").
            raise PoolError(
                f"NATS at {settings.nats_url} rejected the credentials of {name} "
                "(authorization violation); check SUPERPOOL_NATS_USER and its "
                "password, token, nkey seed or creds file"
            ) from None
        raise PoolError(
            f"could not connect to NATS at {settings.nats_url} within "
            f"{settings.request_timeout} s ({exc!r}); start nats-server or set "
            "SUPERPOOL_NATS_URL"
        ) from None
    return nc


def server_urls(nats_url: str) -> list[str]:
    """Split a comma-separated URL list, such as the members of a cluster."""
    return [url.strip() for url in nats_url.split(",") if url.strip()]


async def close(nc: NATS) -> None:
    """Drain the connection, or close it when it cannot drain (reconnecting)."""
    if nc.is_closed:
        return
    try:
        await nc.drain()
        return
    except (nats.errors.ConnectionReconnectingError, nats.errors.ConnectionClosedError):
        pass
    except TimeoutError:
        logger.warning("nats drain timed out; closing")
    try:
        await nc.close()
    except OSError as exc:
        # NOTE: nats-py 2.16 raises ConnectionResetError from close() while it
        # is reconnecting to a dead server; the socket is gone either way.
        logger.debug("nats close raised error=%r", exc)


async def _close_quietly(nc: NATS) -> None:
    try:
        await nc.close()
    except Exception:
        logger.debug("closing a failed nats connection raised", exc_info=True)
