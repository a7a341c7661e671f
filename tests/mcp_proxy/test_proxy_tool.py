"""super_agent_run over the SDK's in-memory client, in both protocol eras."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, Tool

from bus.settings import Settings
from mcp_proxy import TOOL_NAME, build_server
from tests.mcp_proxy import fake_pool
from tests.mcp_proxy.fake_pool import FakePoolClient
from tests.mcp_proxy.proxy import text_of

PARAMETER_DEFAULTS = {
    "prompt_text": None,
    "prompt_file": None,
    "adapter": "claude",
    "cwd_mode": "isolated",
    "caller_cwd": None,
    "model_hint": None,
}

# "legacy" runs the initialize handshake over in-memory streams; the version
# string runs the 2026-07-28 per-request era through the direct dispatcher.
MODES = ["legacy", "2026-07-28"]

Connect = Callable[[], Client]

# Bound for each wait on the fake pool client.
WAIT_S = 10.0


@pytest.fixture(params=MODES)
def connect(
    request: pytest.FixtureRequest, proxy_settings: Settings, pool: FakePoolClient
) -> Connect:
    """Return a factory of in-memory clients of the proxy.

    The tests enter the client themselves: the SDK's task groups must be
    entered and left in one task, and pytest-asyncio sets up and tears down
    an async fixture in different tasks.
    """
    server = build_server(proxy_settings, pool)
    return lambda: Client(server, mode=request.param)


async def get_tool(client: Client) -> Tool:
    listing = await client.list_tools()
    tools = {tool.name: tool for tool in listing.tools}
    assert list(tools) == [TOOL_NAME]
    return tools[TOOL_NAME]


async def call(client: Client, **arguments: Any) -> CallToolResult:
    return await client.call_tool(TOOL_NAME, arguments)


async def test_listing_parameters(connect: Connect) -> None:
    async with connect() as client:
        tool = await get_tool(client)
        properties = tool.input_schema["properties"]
        assert list(properties) == ["task", *PARAMETER_DEFAULTS]
        assert tool.input_schema["required"] == ["task"]
        for name, default in PARAMETER_DEFAULTS.items():
            assert properties[name]["default"] == default, name
        for name, schema in properties.items():
            assert schema.get("description"), f"{name} has no description"


async def test_listing_output_schema(connect: Connect) -> None:
    async with connect() as client:
        tool = await get_tool(client)
        assert tool.output_schema is not None
        assert set(tool.output_schema["properties"]) == {
            "status",
            "output",
            "run_id",
            "adapter",
            "model",
            "usage",
            "cost_usd",
            "error",
            "notes",
            "retry_after_s",
        }
        assert tool.output_schema["required"] == ["status"]


async def test_listing_description(connect: Connect) -> None:
    async with connect() as client:
        tool = await get_tool(client)
        assert tool.description is not None
        assert "POOL_BUSY" in tool.description
        assert "jitter" in tool.description
        assert "POOL_UNREACHABLE" in tool.description
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is False


async def test_listing_names_roots(connect: Connect, proxy_settings: Settings) -> None:
    async with connect() as client:
        properties = (await get_tool(client)).input_schema["properties"]
        root = proxy_settings.workspace_roots[0]
        assert root in properties["caller_cwd"]["description"]
        assert root in properties["prompt_file"]["description"]


async def test_call_ok(connect: Connect) -> None:
    async with connect() as client:
        result = await call(client, task="review", prompt_text="hello", adapter="echo")
        assert result.is_error is False
        assert result.structured_content == {
            "status": "OK",
            "output": "echo: hello",
            "run_id": fake_pool.RUN_ID,
            "adapter": "echo",
            "model": "echo",
            "usage": {"input_tokens": 3, "output_tokens": 4},
            "cost_usd": 0.25,
            "error": None,
            "notes": ["model_hint 'opus' is unknown; used echo"],
            "retry_after_s": None,
        }
        text = text_of(result)
        assert text.startswith(f"OK run_id={fake_pool.RUN_ID} model=echo")
        assert text.endswith("\n\necho: hello")


async def test_call_passes_arguments(connect: Connect, pool: FakePoolClient) -> None:
    async with connect() as client:
        arguments = {
            "task": "edit",
            "prompt_file": "/srv/work/prompt.md",
            "adapter": "gemini",
            "cwd_mode": "caller",
            "caller_cwd": "/srv/work",
            "model_hint": "fast",
        }
        await call(client, **arguments)
        assert len(pool.calls) == 1
        sent = dict(pool.calls[0])
        assert sent.pop("on_event") is not None
        assert sent == {"prompt_text": None, **arguments}


async def test_call_applies_defaults(connect: Connect, pool: FakePoolClient) -> None:
    async with connect() as client:
        await call(client, task="review", prompt_text="hello")
        sent = dict(pool.calls[0])
        del sent["on_event"]
        assert sent == {**PARAMETER_DEFAULTS, "task": "review", "prompt_text": "hello"}


async def test_call_busy(connect: Connect) -> None:
    async with connect() as client:
        result = await call(client, task="busy", prompt_text="hello")
        assert result.is_error is True
        content = result.structured_content
        assert content["status"] == "POOL_BUSY"
        assert content["retry_after_s"] == 0.5
        assert content["error"] == {
            "code": "POOL_BUSY",
            "message": fake_pool.BUSY_MESSAGE,
        }
        text = text_of(result)
        assert text.startswith("POOL_BUSY: every slot is busy; retry after 0.5 s")
        assert "jitter" in text


async def test_call_invalid_request(connect: Connect) -> None:
    async with connect() as client:
        result = await call(client, task="invalid", prompt_text="hello")
        assert result.is_error is True
        content = result.structured_content
        assert content["status"] == "INVALID_REQUEST"
        assert content["error"]["message"] == fake_pool.INVALID_MESSAGE
        assert content["retry_after_s"] is None
        assert fake_pool.INVALID_MESSAGE in text_of(result)


async def test_call_unreachable(connect: Connect) -> None:
    async with connect() as client:
        result = await call(client, task="unreachable", prompt_text="hello")
        assert result.is_error is True
        assert result.structured_content["status"] == "POOL_UNREACHABLE"
        text = text_of(result)
        assert text.startswith(f"POOL_UNREACHABLE: {fake_pool.UNREACHABLE_MESSAGE}")
        assert "do not retry" in text


@pytest.mark.parametrize(
    ("task", "status"),
    [
        ("busy", "POOL_BUSY"),
        ("invalid", "INVALID_REQUEST"),
        ("unreachable", "POOL_UNREACHABLE"),
        ("failed", "RUN_FAILED"),
        ("timeout", "RUN_TIMEOUT"),
        ("cancelled", "CANCELLED"),
    ],
)
async def test_error_matches_schema(connect: Connect, task: str, status: str) -> None:
    async with connect() as client:
        result = await call(client, task=task, prompt_text="hello")
        assert result.is_error is True
        assert result.structured_content["status"] == status
        assert result.structured_content["error"]["message"]
        # The client checks structured content against the schema only when
        # isError is false, so check the error results here.
        await client.session.validate_tool_result(TOOL_NAME, result)


async def test_call_missing_task(connect: Connect, pool: FakePoolClient) -> None:
    async with connect() as client:
        result = await call(client, prompt_text="hello")
        assert result.is_error is True
        assert "task" in text_of(result)
        assert pool.calls == []


async def test_progress_forwarded(connect: Connect) -> None:
    async with connect() as client:
        messages: list[str | None] = []

        async def on_progress(
            progress: float, total: float | None, message: str | None
        ) -> None:
            messages.append(message)

        result = await client.call_tool(
            TOOL_NAME,
            {"task": "review", "prompt_text": "hello"},
            progress_callback=on_progress,
        )
        assert result.is_error is False
        assert messages == ["run started", fake_pool.PROGRESS_MESSAGE]


async def test_cancel_reaches_pool(connect: Connect, pool: FakePoolClient) -> None:
    async with connect() as client:
        call_task = asyncio.create_task(call(client, task="hang", prompt_text="hi"))
        await asyncio.wait_for(pool.hanging.wait(), WAIT_S)
        call_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call_task
        await asyncio.wait_for(pool.cancelled.wait(), WAIT_S)
