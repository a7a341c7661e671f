"""Every tool over streamable HTTP and stdio, with the SDK's client in each era."""

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
from mcp_proxy import (
    CANCEL_TOOL,
    RESULT_TOOL,
    STATUS_TOOL,
    TOOL_NAME,
    TOOL_NAMES,
    serve,
)
from tests.mcp_proxy import fake_pool
from tests.mcp_proxy.fake_pool import FakePoolClient
from tests.mcp_proxy.proxy import (
    PROJECT_ROOT,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ProgressLog,
    proxy_args,
    read_until,
    running_proxy,
)

MODERN = "2026-07-28"
MODES = ["legacy", MODERN]
# The NATS URL points at a closed port, so nothing reaches a real pool.
SUBPROCESS_ENV = {
    "SUPERPOOL_NATS_URL": "nats://127.0.0.1:1",
    "SUPERPOOL_PROXY_HOST": "127.0.0.1",
}


def check_protocol(client: Client, mode: str) -> None:
    if mode == "legacy":
        assert client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
    else:
        assert client.protocol_version == MODERN


async def check_every_tool(client: Client) -> None:
    """Call each of the four tools once or twice and check the results."""
    listing = await client.list_tools()
    assert [tool.name for tool in listing.tools] == list(TOOL_NAMES)
    assert all(tool.output_schema is not None for tool in listing.tools)

    ok = await client.call_tool(TOOL_NAME, {"task": "review", "prompt_text": "hi"})
    assert ok.is_error is False
    assert ok.structured_content["status"] == "OK"
    assert ok.structured_content["output"] == "echo: hi"

    busy = await client.call_tool(TOOL_NAME, {"task": "busy", "prompt_text": "hi"})
    assert busy.is_error is True
    assert busy.structured_content["status"] == "POOL_BUSY"
    assert busy.structured_content["retry_after_s"] == 0.5

    status = await client.call_tool(STATUS_TOOL, {})
    assert status.is_error is False
    assert status.structured_content["slots_free"] == 2
    assert [r["runner_id"] for r in status.structured_content["runners"]] == [
        "runner-0",
        "runner-1",
    ]

    run_id = ok.structured_content["run_id"]
    found = await client.call_tool(RESULT_TOOL, {"run_id": run_id})
    assert found.is_error is False
    assert found.structured_content == ok.structured_content

    missing = await client.call_tool(RESULT_TOOL, {"run_id": "no-such-run"})
    assert missing.is_error is True
    assert missing.structured_content["status"] == "NO_RESULT"

    cancelled = await client.call_tool(CANCEL_TOOL, {"run_id": "r-7"})
    assert cancelled.is_error is False
    assert cancelled.structured_content["status"] == "CANCELLED"


@pytest.mark.parametrize("stateless", [False, True])
@pytest.mark.parametrize("mode", [*MODES, "auto"])
async def test_http_every_tool(
    proxy_settings: Settings, pool: FakePoolClient, mode: str, stateless: bool
) -> None:
    settings = proxy_settings.replace(proxy_stateless_http=stateless)
    async with running_proxy(settings, lambda _: pool) as proxy:
        assert proxy.url.startswith("http://127.0.0.1:")
        assert proxy.url.endswith("/mcp")
        async with Client(proxy.url, mode=mode) as client:
            check_protocol(client, mode)
            await check_every_tool(client)
    assert [call["task"] for call in pool.calls] == ["review", "busy"]
    assert pool.cancels == ["r-7"]


@pytest.mark.parametrize("stateless", [False, True])
@pytest.mark.parametrize("mode", MODES)
async def test_http_progress(
    proxy_settings: Settings, pool: FakePoolClient, mode: str, stateless: bool
) -> None:
    settings = proxy_settings.replace(proxy_stateless_http=stateless)
    progress = ProgressLog()
    async with (
        running_proxy(settings, lambda _: pool) as proxy,
        Client(proxy.url, mode=mode) as client,
    ):
        result = await client.call_tool(
            TOOL_NAME,
            {"task": "review", "prompt_text": "hi"},
            progress_callback=progress,
        )
    run_id = result.structured_content["run_id"]
    assert result.is_error is False
    assert progress.without_ticks() == [
        f"submitted run_id={run_id}; waiting for a runner",
        f"started on runner r1 run_id={run_id}",
        fake_pool.PROGRESS_MESSAGE,
        f"finished status=OK run_id={run_id}",
    ]


@pytest.mark.parametrize(
    ("mode", "stateless"), [("legacy", False), (MODERN, False), (MODERN, True)]
)
async def test_http_cancel_reaches_pool(
    proxy_settings: Settings, pool: FakePoolClient, mode: str, stateless: bool
) -> None:
    settings = proxy_settings.replace(proxy_stateless_http=stateless)
    async with (
        running_proxy(settings, lambda _: pool) as proxy,
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
        await asyncio.wait_for(pool.cancel_called.wait(), STOP_TIMEOUT_S)
    assert pool.cancels == [pool.calls[0]["run_id"]]


async def test_stateless_legacy_cancel_needs_disconnect(
    proxy_settings: Settings, pool: FakePoolClient
) -> None:
    """Pin a limit of stateless HTTP: a handshake-era cancel cannot reach the call.

    The client's notifications/cancelled arrives in a request of its own, which
    no session ties to the call, so the call goes on until the client
    disconnects. The run is cancelled on the pool then.
    """
    settings = proxy_settings.replace(proxy_stateless_http=True)
    async with running_proxy(settings, lambda _: pool) as proxy:
        async with Client(proxy.url, mode="legacy") as client:
            call = asyncio.create_task(
                client.call_tool(TOOL_NAME, {"task": "hang", "prompt_text": "hi"})
            )
            await asyncio.wait_for(pool.hanging.wait(), START_TIMEOUT_S)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            status = await client.call_tool(STATUS_TOOL, {})
            assert status.is_error is False
            assert pool.cancelled.is_set() is False
        await asyncio.wait_for(pool.cancel_called.wait(), STOP_TIMEOUT_S)
    assert pool.cancels == [pool.calls[0]["run_id"]]


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
    # A stopping proxy leaves the run to finish, for super_agent_result.
    assert pool.cancels == []


async def test_http_closes_client(
    proxy_settings: Settings, pool: FakePoolClient
) -> None:
    async with running_proxy(proxy_settings, lambda _: pool):
        assert pool.entered is True
        assert pool.exited is False
    assert pool.exited is True


async def test_serve_unknown_transport(
    proxy_settings: Settings, pool: FakePoolClient
) -> None:
    with pytest.raises(ValueError, match="transport 'sse' is unknown"):
        await serve(proxy_settings, "sse", client_factory=lambda _: pool)
    assert pool.entered is False


@pytest.mark.parametrize("mode", MODES)
async def test_stdio_every_tool(mode: str) -> None:
    parameters = StdioServerParameters(
        command=sys.executable,
        args=proxy_args("--transport", "stdio", "--log-level", "WARNING"),
        env=SUBPROCESS_ENV,
        cwd=PROJECT_ROOT,
    )
    async with Client(parameters, mode=mode) as client:
        check_protocol(client, mode)
        await check_every_tool(client)


async def test_stdio_progress() -> None:
    parameters = StdioServerParameters(
        command=sys.executable,
        args=proxy_args("--transport", "stdio", "--log-level", "WARNING"),
        env=SUBPROCESS_ENV,
        cwd=PROJECT_ROOT,
    )
    progress = ProgressLog()
    async with Client(parameters, mode="legacy") as client:
        result = await client.call_tool(
            TOOL_NAME,
            {"task": "review", "prompt_text": "hi"},
            progress_callback=progress,
        )
    assert result.is_error is False
    assert progress.without_ticks()[1:3] == [
        f"started on runner r1 run_id={result.structured_content['run_id']}",
        fake_pool.PROGRESS_MESSAGE,
    ]


async def test_http_subprocess(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *proxy_args("--transport", "http", "--port", "0", "--stateless"),
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
        assert f"url={url} stateless=True token=none".encode() in log

        async with Client(url, mode="auto") as client:
            await check_every_tool(client)

        process.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(process.communicate(), STOP_TIMEOUT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, rest.decode(errors="replace")
    assert b"proxy stopped on SIGTERM" in rest
