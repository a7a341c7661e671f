"""super_agent_run through the real PoolClient, a nats-server and echo runners."""

from __future__ import annotations

import sys

import pytest
from mcp import Client, StdioServerParameters

from bus.settings import Settings
from mcp_proxy import TOOL_NAME
from tests.mcp_proxy.proxy import PROJECT_ROOT, proxy_args, running_proxy, text_of
from tests.pool import running_pool

MODES = ["legacy", "2026-07-28"]


@pytest.mark.parametrize("mode", MODES)
async def test_pool_echo_run(settings: Settings, nc: object, mode: str) -> None:
    messages: list[str | None] = []

    async def on_progress(
        progress: float, total: float | None, message: str | None
    ) -> None:
        messages.append(message)

    async with (
        running_pool(settings, runners=1),
        running_proxy(settings, check_tasks=False) as proxy,
        Client(proxy.url, mode=mode) as client,
    ):
        result = await client.call_tool(
            TOOL_NAME,
            {
                "task": "hello",
                "prompt_text": "hi there",
                "adapter": "echo",
                "model_hint": "delay=0.01",
            },
            progress_callback=on_progress,
        )
    assert result.is_error is False
    content = result.structured_content
    assert content["status"] == "OK"
    assert content["output"] == "echo (no model was called): hi there"
    assert content["model"] == "echo"
    assert content["adapter"] == "echo"
    assert len(content["run_id"]) == 32
    assert content["error"] is None
    assert "echo waiting 0.01 s" in messages


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
        result = await client.call_tool(
            TOOL_NAME, {"task": "hello", "prompt_text": "hi", "adapter": "echo"}
        )
    assert result.is_error is True
    content = result.structured_content
    assert content["status"] == "POOL_UNREACHABLE"
    assert content["retry_after_s"] is None
    assert "nats://127.0.0.1:1" in content["error"]["message"]
    assert text_of(result).startswith("POOL_UNREACHABLE: ")
