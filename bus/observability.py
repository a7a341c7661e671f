"""A small HTTP server for probes and metrics: /healthz, /readyz and /metrics.

/healthz answers 200 while the process runs and its NATS connection is up;
/readyz answers 200 only while the part also takes work (not draining, NATS
up, provisioning confirmed). Kubernetes restarts a pod on a failing /healthz
and stops routing to it on a failing /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

logger = logging.getLogger(__name__)

# Pending connections the kernel queues before uvicorn accepts them.
LISTEN_BACKLOG = 128
# Open probe and scrape requests get this long when the server stops.
SHUTDOWN_GRACE_S = 2

Check = Callable[[], bool]


class QuietServer(uvicorn.Server):
    """A uvicorn server that reports its start and leaves signals to the caller.

    uvicorn would otherwise take over SIGINT and SIGTERM and raise them again
    after its shutdown; the caller stops this server by cancelling it.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket; port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def probe_app(registry: CollectorRegistry, healthy: Check, ready: Check) -> Starlette:
    def answer(ok: bool) -> Response:
        return PlainTextResponse("ok\n" if ok else "unavailable\n", 200 if ok else 503)

    async def healthz(request: Request) -> Response:
        return answer(healthy())

    async def readyz(request: Request) -> Response:
        return answer(ready())

    async def metrics(request: Request) -> Response:
        # A plain route: a mounted app would answer /metrics with a redirect.
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )


async def serve_probes(
    registry: CollectorRegistry,
    healthy: Check,
    ready: Check,
    host: str,
    port: int,
    on_listening: Callable[[str], object] | None = None,
) -> None:
    """Serve /healthz, /readyz and /metrics until cancelled."""
    app = probe_app(registry, healthy, ready)
    with bind(host, port) as sock:
        url = f"http://{host}:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            app,
            lifespan="off",
            ws="none",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )

        def started() -> None:
            logger.info("probes listening url=%s", url)
            if on_listening is not None:
                on_listening(url)

        server = QuietServer(config, started)
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            server.should_exit = True
            await task
            raise
