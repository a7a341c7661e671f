"""A whole pool in one process: embedded nats-server, runners and the MCP proxy."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.connection import connect
from bus.errors import ServerLaunchError
from bus.provision import provision
from bus.server import EmbeddedServer
from bus.settings import Settings
from runner.runner import Runner

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = ".superpool"
# The proxy reports its URL once uvicorn accepts connections.
PROXY_START_TIMEOUT_S = 15.0


@dataclass
class LocalPool:
    settings: Settings
    server: EmbeddedServer
    runners: list[Runner]
    proxy_url: str


@asynccontextmanager
async def local_pool(
    settings: Settings,
    *,
    data_dir: Path,
    nats_port: int = -1,
    runners: int = 3,
    slots: int | None = None,
    proxy_port: int | None = 0,
) -> AsyncIterator[LocalPool]:
    """Start a pool on loopback and stop every part of it on exit.

    `proxy_port=None` starts no MCP proxy; 0 picks a free port.
    """
    server = EmbeddedServer(data_dir, port=nats_port if nats_port else -1)
    try:
        await asyncio.to_thread(server.start)
    except ServerLaunchError:
        raise
    async with AsyncExitStack() as stack:
        stack.callback(server.stop)
        # In-process runners share one process, so they serve no probes.
        changes: dict[str, object] = {
            "nats_url": server.url,
            "probe_port": -1,
            "proxy_probe_port": -1,
        }
        if not settings.workspace_roots:
            changes["workspace_roots"] = (os.getcwd(),)
        settings = settings.replace(**changes)
        nc = await connect(settings, name="superpool-up")
        await provision(nc.jetstream(timeout=settings.request_timeout), settings)
        await nc.close()
        started = []
        for index in range(runners):
            runner = Runner(settings, runner_id=f"local-{index + 1}", slots=slots)
            started.append(await stack.enter_async_context(runner))
        proxy_url = ""
        if proxy_port is not None:
            proxy_url = await _start_proxy(stack, settings, proxy_port)
        yield LocalPool(settings, server, started, proxy_url)


async def _start_proxy(stack: AsyncExitStack, settings: Settings, port: int) -> str:
    from mcp_proxy.server import serve

    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_listening(url: str) -> None:
        if not listening.done():
            listening.set_result(url)

    task = asyncio.create_task(
        serve(settings, "http", port=port, on_listening=on_listening)
    )

    async def stop_proxy() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(stop_proxy)
    waiting: set[asyncio.Future[Any]] = {task, listening}
    done, _ = await asyncio.wait(
        waiting,
        timeout=PROXY_START_TIMEOUT_S,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if task in done:
        task.result()
    if listening not in done:
        raise ServerLaunchError(
            f"the MCP proxy did not start within {PROXY_START_TIMEOUT_S} s"
        )
    return listening.result()


def client_config(proxy_url: str) -> str:
    """Return an MCP client configuration that points at the proxy."""
    config = {"mcpServers": {"superpool": {"type": "http", "url": proxy_url}}}
    return json.dumps(config, indent=2)


async def run_local_pool(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> None:
    """Serve `superpool up` until SIGINT or SIGTERM."""
    data_dir = Path(args.data_dir or DEFAULT_DATA_DIR).resolve()
    proxy_port = settings.proxy_port if args.proxy_port is None else args.proxy_port
    async with local_pool(
        settings,
        data_dir=data_dir,
        nats_port=args.nats_port,
        runners=args.runners,
        slots=args.slots,
        proxy_port=proxy_port,
    ) as pool:
        slots = sum(runner.slots for runner in pool.runners)
        print(f"nats-server   {pool.settings.nats_url} (JetStream store {data_dir})")
        print(f"runners       {len(pool.runners)} with {slots} slots in all")
        print(f"MCP proxy     {pool.proxy_url} (streamable HTTP)")
        print(f"caller roots  {', '.join(pool.settings.workspace_roots)}")
        print("\nMCP client configuration:")
        print(client_config(pool.proxy_url))
        print(
            f"\nTry:  superpool --nats-url {pool.settings.nats_url} run 'hello' "
            "--task hello --adapter echo"
        )
        print("Stop with Ctrl-C.", flush=True)
        await _until_stop_or_server_exit(pool.server, stop)
        print("stopping...", flush=True)


# `superpool up` checks its nats-server this often.
SERVER_CHECK_S = 1.0


async def _until_stop_or_server_exit(
    server: EmbeddedServer, stop: asyncio.Event
) -> None:
    """Wait for Ctrl-C or SIGTERM; raise when the embedded nats-server dies first."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), SERVER_CHECK_S)
        except TimeoutError:
            pass
        if not server.running:
            tail = "\n".join(list(server.output)[-5:])
            raise ServerLaunchError(
                f"the embedded nats-server exited; stopping the pool. Its last "
                f"output:\n{tail}"
            )
