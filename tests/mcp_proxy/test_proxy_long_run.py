"""A run longer than the client's read timeout, over HTTP, with real runners.

The MCP Python SDK 2.3.0 client has a fixed read timeout per request: progress
notifications do not extend it. Clients such as the TypeScript SDK with
`resetTimeoutOnProgress` restart the timeout on each notification instead;
`call_resetting` does the same here with `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from mcp import Client, MCPError
from mcp_types import REQUEST_TIMEOUT, CallToolResult

from bus.settings import Settings
from mcp_proxy import TOOL_NAME
from mcp_proxy.progress import PROGRESS_INTERVAL_S
from tests.mcp_proxy.proxy import ProgressLog, running_proxy
from tests.pool import running_pool

# The run takes five times as long as the client waits without news.
RUN_S = 25
READ_TIMEOUT_S = 5.0
RUN_TIMEOUT_S = 60
LONG_RUN = {
    "task": "long",
    "prompt_text": "long run",
    "adapter": "echo",
    "model_hint": f"delay={RUN_S}",
    "timeout_s": RUN_TIMEOUT_S,
}


async def call_resetting(
    client: Client, arguments: dict[str, Any], progress: ProgressLog
) -> CallToolResult:
    """Call the tool with a read timeout that each progress notification restarts."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(READ_TIMEOUT_S) as read_timeout:

        async def on_progress(
            value: float, total: float | None, message: str | None
        ) -> None:
            read_timeout.reschedule(loop.time() + READ_TIMEOUT_S)
            await progress(value, total, message)

        return await client.call_tool(
            TOOL_NAME, arguments, progress_callback=on_progress
        )


async def call_fixed_timeout(client: Client, progress: ProgressLog) -> float:
    """Call the tool with the SDK's own read timeout; return when it gave up."""
    started = time.monotonic()
    with pytest.raises(MCPError) as raised:
        await client.call_tool(
            TOOL_NAME,
            LONG_RUN,
            read_timeout_seconds=READ_TIMEOUT_S,
            progress_callback=progress,
        )
    assert raised.value.error.code == REQUEST_TIMEOUT
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_long_run_outlives_timeout(settings: Settings, nc: object) -> None:
    # Stateless HTTP, as several replicas behind a Kubernetes Service run it.
    settings = settings.replace(proxy_stateless_http=True)
    legacy_progress, modern_progress, control = (
        ProgressLog(),
        ProgressLog(),
        ProgressLog(),
    )

    async with (
        running_pool(settings, runners=1, slots=4),
        running_proxy(settings, check_tasks=False) as proxy,
        Client(proxy.url, mode="legacy") as legacy,
        Client(proxy.url, mode="2026-07-28") as modern,
        Client(proxy.url, mode="legacy") as silent,
        Client(proxy.url, mode="legacy") as fixed,
    ):
        started = time.monotonic()
        results = await asyncio.gather(
            call_resetting(legacy, LONG_RUN, legacy_progress),
            call_resetting(modern, LONG_RUN, modern_progress),
            # No progress callback: the request carries no progress token.
            silent.call_tool(TOOL_NAME, LONG_RUN),
            call_fixed_timeout(fixed, control),
        )
        elapsed = time.monotonic() - started

    *calls, gave_up_after = results
    for result in calls:
        assert result.is_error is False
        assert result.structured_content["status"] == "OK"
        assert result.structured_content["output"] == (
            "echo (no model was called): long run"
        )
    assert elapsed >= RUN_S
    assert elapsed < RUN_TIMEOUT_S

    # The SDK's fixed read timeout gives up although progress kept coming.
    assert READ_TIMEOUT_S <= gave_up_after < RUN_S
    assert len(control.messages) >= 2

    for progress in (legacy_progress, modern_progress):
        assert progress.longest_gap(started) < READ_TIMEOUT_S
        assert progress.longest_gap(started) <= PROGRESS_INTERVAL_S + 1.0
        assert progress.messages[-1].startswith("finished status=OK run_id=")
        ticks = [m for m in progress.messages if m.startswith("still running")]
        assert ticks, progress.messages
