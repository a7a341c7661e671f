"""Serve an MCP server over streamable HTTP with uvicorn on a socket bound here.

Binding the socket before uvicorn starts lets a caller ask for port 0 and
still learn the port, through the `on_listening` callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn
from mcp.server.mcpserver import MCPServer

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
# Open connections get this long to finish when the server stops; streams
# that are still open after it are cancelled.
SHUTDOWN_GRACE_S = 5
# Pending connections the kernel queues before uvicorn accepts them.
LISTEN_BACKLOG = 128

ListeningCallback = Callable[[str], object]


class _Server(uvicorn.Server):
    """A uvicorn server that reports startup and leaves signals to its caller."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn 0.55 would take over SIGINT and SIGTERM and raise them again
        # after shutdown. The caller stops this server by cancelling it instead.
        yield


async def serve_http(
    server: MCPServer,
    host: str,
    port: int,
    *,
    on_listening: ListeningCallback | None = None,
) -> None:
    """Serve `server` at http://host:port/mcp until cancelled.

    Raises:
        OSError: the address cannot be bound, for example because the port is
            in use.
    """
    if not _is_loopback(host):
        logger.warning(
            "proxy binds a non-loopback address host=%s; anyone who can reach "
            "it can start runs, and Host header checks are off",
            host,
        )
    app = server.streamable_http_app(streamable_http_path=MCP_PATH, host=host)
    with _bind(host, port) as sock:
        url = _url(host, sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            lifespan="on",
            ws="none",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )

        def started() -> None:
            if on_listening is not None:
                on_listening(url)
            logger.info("proxy listening url=%s", url)

        try:
            await _run_until_cancelled(_Server(config, started), sock)
        finally:
            logger.info("proxy stopped url=%s", url)


async def _run_until_cancelled(server: _Server, sock: socket.socket) -> None:
    """Run uvicorn, and on cancellation let it shut down before re-raising."""
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        # Cancelling uvicorn's task directly would skip its shutdown and leave
        # the MCP session manager's tasks running.
        server.should_exit = True
        await task
        raise


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


def _url(host: str, port: int) -> str:
    # An IPv6 address needs brackets in a URL.
    url_host = f"[{host}]" if ":" in host else host
    return f"http://{url_host}:{port}{MCP_PATH}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
