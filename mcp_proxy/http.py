"""Serve an MCP server over streamable HTTP with uvicorn on a socket bound here.

Binding the socket before uvicorn starts lets a caller ask for port 0 and
still learn the port, through the `on_listening` callback.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from bus.observability import QuietServer
from bus.settings import Settings
from mcp_proxy.security import check_exposure, transport_security

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
# GET returns 200 "ok" while the server runs, for liveness and readiness probes.
HEALTH_PATH = "/healthz"
# Open connections get this long to finish when the server stops; streams
# that are still open after it are cancelled.
SHUTDOWN_GRACE_S = 5
# Pending connections the kernel queues before uvicorn accepts them.
LISTEN_BACKLOG = 128

ListeningCallback = Callable[[str], object]


async def serve_http(
    server: MCPServer,
    settings: Settings,
    host: str,
    port: int,
    *,
    token: str = "",
    on_listening: ListeningCallback | None = None,
    on_stopping: Callable[[], None] | None = None,
) -> None:
    """Serve `server` at http://host:port/mcp until cancelled.

    Args:
        server: The MCP server, built with the same `token`.
        settings: Supplies the allowed Host names and stateless mode.
        host: Address to bind.
        port: Port to bind; 0 picks a free one.
        token: The bearer token the server requires, or "" for none; used
            here only for the start-up warnings.
        on_listening: Called with the URL once the server accepts connections.
        on_stopping: Called when cancellation starts the shutdown, before
            open requests are cancelled.

    Raises:
        OSError: the address cannot be bound, for example because the port is
            in use.
        ConfigError: `proxy_allowed_hosts` has an invalid entry.
    """
    security = transport_security(settings, host)
    check_exposure(settings, host, token)
    server.custom_route(HEALTH_PATH, methods=["GET"])(_health)
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=settings.proxy_stateless_http,
        transport_security=security,
        host=host,
    )
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
            logger.info(
                "proxy listening url=%s stateless=%s token=%s",
                url,
                settings.proxy_stateless_http,
                "required" if token else "none",
            )

        try:
            await _run_until_cancelled(QuietServer(config, started), sock, on_stopping)
        finally:
            logger.info("proxy stopped url=%s", url)


async def _health(request: Request) -> Response:
    # Kubernetes probes send the pod IP as Host and no token, so this route
    # sits outside the Host check and the token check.
    return PlainTextResponse("ok\n")


async def _run_until_cancelled(
    server: QuietServer, sock: socket.socket, on_stopping: Callable[[], None] | None
) -> None:
    """Run uvicorn, and on cancellation let it shut down before re-raising."""
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if on_stopping is not None:
            on_stopping()
        # Cancelling uvicorn's task directly would skip its shutdown and leave
        # the MCP session manager's tasks running.
        server.should_exit = True
        await task
        raise


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    # create_server leaves proto 0, and asyncio (3.11 base_events._set_nodelay)
    # sets TCP_NODELAY only on IPPROTO_TCP sockets. Without it a keep-alive
    # response waits about 40 ms for the client's delayed ACK. Accepted
    # sockets inherit the option on Linux.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _url(host: str, port: int) -> str:
    # An IPv6 address needs brackets in a URL.
    url_host = f"[{host}]" if ":" in host else host
    return f"http://{url_host}:{port}{MCP_PATH}"
