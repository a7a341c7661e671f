"""The proxy over streamable HTTP and stdio, with the SDK's own client."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

import mcp_proxy.http
from bus.settings import Settings
from mcp_proxy import TOOL_NAME, serve
from tests.mcp_proxy import fake_pool
from tests.mcp_proxy.fake_pool import FakePoolClient
from tests.mcp_proxy.proxy import (
    PROJECT_ROOT,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    proxy_args,
    read_until,
    running_proxy,
)

MODERN = "2026-07-28"


def check_protocol(client: Client, mode: str) -> None:
    if mode == "legacy":
        assert client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
    else:
        assert client.protocol_version == MODERN


async def check_calls(client: Client) -> None:
    listing = await client.list_tools()
    assert [tool.name for tool in listing.tools] == [TOOL_NAME]
    assert listing.tools[0].output_schema is not None

    ok = await client.call_tool(TOOL_NAME, {"task": "review", "prompt_text": "hi"})
    assert ok.is_error is False
    assert ok.structured_content["output"] == "echo: hi"
    assert ok.structured_content["status"] == "OK"

    busy = await client.call_tool(TOOL_NAME, {"task": "busy", "prompt_text": "hi"})
    assert busy.is_error is True
    assert busy.structured_content["status"] == "POOL_BUSY"
    assert busy.structured_content["retry_after_s"] == 0.5


@pytest.mark.parametrize("mode", ["legacy", MODERN, "auto"])
async def test_http_modes(
    proxy_settings: Settings, pool: FakePoolClient, mode: str
) -> None:
    async with running_proxy(proxy_settings, lambda _: pool) as proxy:
        assert proxy.url.startswith("http://127.0.0.1:")
        assert proxy.url.endswith("/mcp")
        async with Client(proxy.url, mode=mode) as client:
            check_protocol(client, mode)
            await check_calls(client)
    assert len(pool.calls) == 2


async def test_http_progress(proxy_settings: Settings, pool: FakePoolClient) -> None:
    messages: list[str | None] = []

    async def on_progress(
        progress: float, total: float | None, message: str | None
    ) -> None:
        messages.append(message)

    async with (
        running_proxy(proxy_settings, lambda _: pool) as proxy,
        Client(proxy.url, mode="legacy") as client,
    ):
        result = await client.call_tool(
            TOOL_NAME,
            {"task": "review", "prompt_text": "hi"},
            progress_callback=on_progress,
        )
    assert result.is_error is False
    assert messages == ["run started", fake_pool.PROGRESS_MESSAGE]


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_http_cancel_reaches_pool(
    proxy_settings: Settings, pool: FakePoolClient, mode: str
) -> None:
    async with (
        running_proxy(proxy_settings, lambda _: pool) as proxy,
        Client(proxy.url, mode=mode) as client,
    ):
        call = asyncio.create_task(
            client.call_tool(TOOL_NAME, {"task": "hang", "prompt_text": "hi"})
        )
        await asyncio.wait_for(pool.hanging.wait(), START_TIMEOUT_S)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(pool.cancelled.wait(), STOP_TIMEOUT_S)


async def test_http_stops_during_call(
    proxy_settings: Settings, pool: FakePoolClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The open response stream keeps uvicorn's shutdown waiting for the grace.
    monkeypatch.setattr(mcp_proxy.http, "SHUTDOWN_GRACE_S", 1)
    async with running_proxy(proxy_settings, lambda _: pool) as proxy:
        async with Client(proxy.url, mode="legacy") as client:
            call = asyncio.create_task(
                client.call_tool(TOOL_NAME, {"task": "hang", "prompt_text": "hi"})
            )
            await asyncio.wait_for(pool.hanging.wait(), START_TIMEOUT_S)
            await proxy.stop()
            assert pool.cancelled.is_set()
            assert pool.exited is True
            with pytest.raises(MCPError, match="SSE stream ended"):
                await asyncio.wait_for(call, STOP_TIMEOUT_S)


async def test_http_closes_client(
    proxy_settings: Settings, pool: FakePoolClient
) -> None:
    async with running_proxy(proxy_settings, lambda _: pool):
        assert pool.entered is True
        assert pool.exited is False
    assert pool.exited is True


async def test_http_rejects_host(
    proxy_settings: Settings, pool: FakePoolClient
) -> None:
    async with running_proxy(proxy_settings, lambda _: pool) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
        writer.write(
            b"POST /mcp HTTP/1.1\r\n"
            b"Host: rebound.example:80\r\n"
            b"Content-Type: application/json\r\n"
            b"Accept: application/json, text/event-stream\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), STOP_TIMEOUT_S)
        writer.close()
        await writer.wait_closed()
    assert status_line.split()[1] == b"421"
    assert pool.calls == []


async def test_serve_unknown_transport(
    proxy_settings: Settings, pool: FakePoolClient
) -> None:
    with pytest.raises(ValueError, match="transport 'sse' is unknown"):
        await serve(proxy_settings, "sse", client_factory=lambda _: pool)
    assert pool.entered is False


# The NATS URL points at a closed port, so nothing reaches a real pool.
SUBPROCESS_ENV = {
    "SUPERPOOL_NATS_URL": "nats://127.0.0.1:1",
    "SUPERPOOL_PROXY_HOST": "127.0.0.1",
}


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_stdio_modes(mode: str) -> None:
    parameters = StdioServerParameters(
        command=sys.executable,
        args=proxy_args("--transport", "stdio", "--log-level", "WARNING"),
        env=SUBPROCESS_ENV,
        cwd=PROJECT_ROOT,
    )
    async with Client(parameters, mode=mode) as client:
        check_protocol(client, mode)
        await check_calls(client)


async def test_http_subprocess(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *proxy_args("--transport", "http", "--port", "0"),
        "--port-file",
        str(port_file),
        cwd=PROJECT_ROOT,
        env={**SUBPROCESS_ENV, "PATH": os.environ.get("PATH", "")},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        log = await asyncio.wait_for(
            read_until(process.stderr, b"proxy listening url="), START_TIMEOUT_S
        )
        port = int(port_file.read_text())
        url = f"http://127.0.0.1:{port}/mcp"
        assert url.encode() in log

        async with Client(url, mode="auto") as client:
            await check_calls(client)

        process.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(process.communicate(), STOP_TIMEOUT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, rest.decode(errors="replace")
    assert b"proxy stopped on SIGTERM" in rest
