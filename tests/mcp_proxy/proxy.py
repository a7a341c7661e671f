"""Helpers that serve the proxy over HTTP in process or start it as a subprocess."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from bus.settings import Settings
from mcp_proxy.server import ClientFactory, serve

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FAKE_FACTORY = "tests.mcp_proxy.fake_pool:FakePoolClient"
# Bound for starting a server or a subprocess, and for stopping one.
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class RunningProxy:
    """A proxy served over HTTP by `serve` in a task of its own."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.url = ""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    async def stop(self) -> None:
        """Cancel `serve` and check that it stops within STOP_TIMEOUT_S."""
        if self.task.done():
            return
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(self.task, STOP_TIMEOUT_S)


@asynccontextmanager
async def running_proxy(
    settings: Settings,
    client_factory: ClientFactory | None = None,
    *,
    check_tasks: bool = True,
) -> AsyncIterator[RunningProxy]:
    """Serve the proxy over HTTP on a free port until the block ends.

    With `check_tasks`, fail when a task of the proxy outlives it.
    """
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            settings,
            "http",
            port=0,
            client_factory=client_factory,
            on_listening=listening.set_result,
        )
    )
    proxy = RunningProxy(task)
    waiters: set[asyncio.Future[Any]] = {listening, task}
    try:
        await asyncio.wait(
            waiters, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if task.done():
            task.result()
        assert listening.done(), "the proxy did not start listening"
        proxy.url = listening.result()
        yield proxy
    finally:
        await proxy.stop()
    if check_tasks:
        leftover = [task for task in asyncio.all_tasks() if not is_expected(task)]
        assert not leftover, f"tasks still running after the proxy stopped: {leftover}"


@asynccontextmanager
async def http_client(
    url: str, *, mode: str = "legacy", token: str = ""
) -> AsyncIterator[Client]:
    """Connect the SDK's client to `url`, sending `token` as a bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # The SDK's own defaults: 30 s to connect and write, 300 s to read a stream.
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def is_expected(task: asyncio.Task[Any]) -> bool:
    """Tell whether `task` may outlive the proxy: the test's own or sse-starlette's.

    sse-starlette 3.7 starts one `_shutdown_watcher` per event loop. It ends
    only when it finds a stopping uvicorn through uvicorn's signal handlers,
    which this proxy leaves uninstalled, so it runs until its loop closes.
    """
    if task is asyncio.current_task():
        return True
    return getattr(task.get_coro(), "__qualname__", "") == "_shutdown_watcher"


class ProgressLog:
    """A progress callback that records every notification and when it came."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.messages: list[str] = []
        self.times: list[float] = []

    async def __call__(
        self, progress: float, total: float | None, message: str | None
    ) -> None:
        self.values.append(progress)
        self.messages.append(message or "")
        self.times.append(time.monotonic())

    def without_ticks(self) -> list[str]:
        """Return the messages but the ticker's "still ..." ones."""
        return [
            message for message in self.messages if not message.startswith("still ")
        ]

    def longest_gap(self, start: float) -> float:
        """Return the longest time without a notification since `start`."""
        times = [start, *self.times]
        return max(later - earlier for earlier, later in itertools.pairwise(times))


def text_of(result: CallToolResult) -> str:
    """Return the single text content block of a tool result."""
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def proxy_args(*args: str, fake: bool = True) -> list[str]:
    """Return the arguments of `python -m mcp_proxy`, with the fake pool client."""
    factory = ["--client-factory", FAKE_FACTORY] if fake else []
    return ["-m", "mcp_proxy", *factory, *args]


async def read_until(stream: asyncio.StreamReader, marker: bytes) -> bytes:
    """Read lines from `stream` until one contains `marker`; return them all."""
    seen = b""
    while marker not in seen:
        line = await stream.readline()
        if not line:
            raise AssertionError(f"stream ended before {marker!r}: {seen!r}")
        seen += line
    return seen
