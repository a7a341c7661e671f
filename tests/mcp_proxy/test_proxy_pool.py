"""The proxy's tools through the real PoolClient, a nats-server and echo runners."""

from __future__ import annotations

import asyncio
import sys

import pytest
from mcp import Client, StdioServerParameters

from bus.client import PoolClient
from bus.settings import Settings
from bus.wire import Status
from mcp_proxy import CANCEL_TOOL, RESULT_TOOL, STATUS_TOOL, TOOL_NAME
from tests.mcp_proxy.proxy import (
    PROJECT_ROOT,
    ProgressLog,
    proxy_args,
    running_proxy,
    text_of,
)
from tests.pool import running_pool, wait_until

MODES = ["legacy", "2026-07-28"]
ECHO = {"adapter": "echo", "prompt_text": "hi there"}


@pytest.mark.parametrize("mode", MODES)
async def test_pool_echo_run(settings: Settings, nc: object, mode: str) -> None:
    progress = ProgressLog()
    async with (
        running_pool(settings, runners=1),
        running_proxy(settings, check_tasks=False) as proxy,
        Client(proxy.url, mode=mode) as client,
    ):
        result = await client.call_tool(
            TOOL_NAME,
            {"task": "hello", **ECHO, "model_hint": "delay=0.01"},
            progress_callback=progress,
        )
    content = result.structured_content
    run_id = content["run_id"]
    assert result.is_error is False
    assert content["status"] == "OK"
    assert content["output"] == "echo (no model was called): hi there"
    assert content["model"] == "echo"
    assert content["adapter"] == "echo"
    assert len(run_id) == 32
    assert content["error"] is None
    assert progress.without_ticks() == [
        f"submitted run_id={run_id}; waiting for a runner",
        f"started on runner runner-0 run_id={run_id}",
        "echo waiting 0.01 s",
        f"finished status=OK run_id={run_id}",
    ]


@pytest.mark.parametrize("mode", MODES)
async def test_pool_every_tool(settings: Settings, nc: object, mode: str) -> None:
    progress = ProgressLog()
    async with (
        running_pool(settings, runners=1, slots=2),
        running_proxy(settings, check_tasks=False) as proxy,
        Client(proxy.url, mode=mode) as client,
    ):
        status = await client.call_tool(STATUS_TOOL, {})
        ran = await client.call_tool(TOOL_NAME, {"task": "hello", **ECHO})
        found = await client.call_tool(
            RESULT_TOOL, {"run_id": ran.structured_content["run_id"]}
        )
        missing = await client.call_tool(RESULT_TOOL, {"run_id": "never-submitted"})
        long_call = asyncio.create_task(
            client.call_tool(
                TOOL_NAME,
                {"task": "long", **ECHO, "model_hint": "delay=30"},
                progress_callback=progress,
            )
        )
        await wait_until(
            lambda: progress.messages, lambda seen: "echo waiting 30 s" in seen
        )
        long_id = progress.messages[0].split("run_id=")[1].split(";")[0]
        cancelled = await client.call_tool(CANCEL_TOOL, {"run_id": long_id})
        ended = await long_call

    assert status.is_error is False
    assert status.structured_content["slots_total"] == 2
    assert status.structured_content["slots_free"] == 2
    assert [r["runner_id"] for r in status.structured_content["runners"]] == [
        "runner-0"
    ]
    assert ran.structured_content["status"] == "OK"
    assert found.is_error is False
    assert found.structured_content == ran.structured_content
    assert missing.is_error is True
    assert missing.structured_content["status"] == "NO_RESULT"
    assert cancelled.is_error is False
    assert cancelled.structured_content["status"] == "CANCELLED"
    assert cancelled.structured_content["run_id"] == long_id
    assert ended.structured_content["status"] == "CANCELLED"


async def test_pool_waits_for_slot(settings: Settings, nc: object) -> None:
    progress = ProgressLog()
    async with (
        running_pool(settings, runners=1, slots=2),
        PoolClient(settings) as pool,
        running_proxy(settings, check_tasks=False) as proxy,
        Client(proxy.url, mode="legacy") as client,
    ):
        holders = [
            asyncio.create_task(
                pool.run("hold", adapter="echo", prompt_text="x", model_hint="delay=3")
            )
            for _ in range(2)
        ]
        await wait_until(pool.status, lambda status: status.in_stream == 2)
        busy = await client.call_tool(TOOL_NAME, {"task": "hello", **ECHO})
        waited = await client.call_tool(
            TOOL_NAME,
            {"task": "hello", **ECHO, "wait_for_slot_s": 30},
            progress_callback=progress,
        )
        holder_results = await asyncio.gather(*holders)
    assert [result.status for result in holder_results] == [Status.OK, Status.OK]
    assert busy.is_error is True
    assert busy.structured_content["status"] == "POOL_BUSY"
    assert waited.is_error is False
    assert waited.structured_content["status"] == "OK"
    attempts = int(waited.structured_content["run_id"].rsplit("-", 1)[1])
    assert attempts >= 2
    busy_messages = [m for m in progress.messages if m.startswith("all slots busy")]
    assert len(busy_messages) == attempts - 1


async def test_pool_rejects_path(settings: Settings, nc: object) -> None:
    async with (
        running_pool(settings, runners=1),
        running_proxy(settings, check_tasks=False) as proxy,
        Client(proxy.url, mode="legacy") as client,
    ):
        result = await client.call_tool(
            TOOL_NAME,
            {
                "task": "edit",
                "prompt_text": "hi",
                "adapter": "echo",
                "cwd_mode": "caller",
                "caller_cwd": "/etc",
            },
        )
    assert result.is_error is True
    content = result.structured_content
    assert content["status"] == "INVALID_REQUEST"
    assert "/etc" in content["error"]["message"]
    assert content["error"]["message"] in text_of(result)


async def test_pool_unreachable_stdio() -> None:
    # No fake client: the real PoolClient meets a closed NATS port.
    parameters = StdioServerParameters(
        command=sys.executable,
        args=proxy_args("--transport", "stdio", "--log-level", "ERROR", fake=False),
        env={
            "SUPERPOOL_NATS_URL": "nats://127.0.0.1:1",
            "SUPERPOOL_REQUEST_TIMEOUT": "0.5",
        },
        cwd=PROJECT_ROOT,
    )
    async with Client(parameters, mode="legacy") as client:
        ran = await client.call_tool(
            TOOL_NAME, {"task": "hello", "prompt_text": "hi", "adapter": "echo"}
        )
        status = await client.call_tool(STATUS_TOOL, {})
        found = await client.call_tool(RESULT_TOOL, {"run_id": "r-1"})
        cancelled = await client.call_tool(CANCEL_TOOL, {"run_id": "r-1"})
    content = ran.structured_content
    assert ran.is_error is True
    assert content["status"] == "POOL_UNREACHABLE"
    assert content["retry_after_s"] is None
    assert "nats://127.0.0.1:1" in content["error"]["message"]
    assert text_of(ran).startswith("POOL_UNREACHABLE: ")
    for result in (status, found, cancelled):
        assert result.is_error is True
        assert result.structured_content["status"] == "POOL_UNREACHABLE"
        assert "nats://127.0.0.1:1" in result.structured_content["error"]["message"]
