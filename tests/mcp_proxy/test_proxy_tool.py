"""super_agent_run over the SDK's in-memory client, in both protocol eras."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, Tool

import mcp_proxy.tools
from bus.settings import Settings
from mcp_proxy import TOOL_NAME, TOOL_NAMES
from tests.mcp_proxy import fake_pool
from tests.mcp_proxy.conftest import Connect
from tests.mcp_proxy.fake_pool import FakePoolClient
from tests.mcp_proxy.proxy import ProgressLog, text_of

PARAMETER_DEFAULTS = {
    "prompt_text": None,
    "prompt_file": None,
    "adapter": "claude",
    "cwd_mode": "isolated",
    "caller_cwd": None,
    "model_hint": None,
    "timeout_s": None,
    "wait_for_slot_s": 0.0,
}
RUN_FIELDS = {
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

# Bound for each wait on the fake pool client.
WAIT_S = 10.0


async def get_tool(client: Client, name: str = TOOL_NAME) -> Tool:
    listing = await client.list_tools()
    tools = {tool.name: tool for tool in listing.tools}
    return tools[name]


async def call(client: Client, **arguments: Any) -> CallToolResult:
    return await client.call_tool(TOOL_NAME, arguments)


def sent_arguments(pool: FakePoolClient) -> dict[str, Any]:
    """Return the arguments of the only run call, without the proxy's own ones."""
    assert len(pool.calls) == 1
    sent = dict(pool.calls[0])
    assert re.fullmatch(r"[0-9a-f]{32}", sent.pop("run_id"))
    assert sent.pop("on_event") is not None
    return sent


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorten the proxy's backoff steps, so retries take milliseconds."""
    monkeypatch.setattr(mcp_proxy.tools, "DEFAULT_BASE_S", 0.01)
    monkeypatch.setattr(mcp_proxy.tools, "DEFAULT_MAX_S", 0.02)


async def test_listing_tool_names(connect: Connect) -> None:
    async with connect() as client:
        listing = await client.list_tools()
    assert [tool.name for tool in listing.tools] == list(TOOL_NAMES)
    for tool in listing.tools:
        assert tool.output_schema is not None, tool.name
        assert tool.description, tool.name


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


async def test_listing_names_limits(connect: Connect, proxy_settings: Settings) -> None:
    async with connect() as client:
        properties = (await get_tool(client)).input_schema["properties"]
    assert "at most 3600" in properties["timeout_s"]["description"]
    assert "by default 300" in properties["timeout_s"]["description"]
    assert "at most 600" in properties["wait_for_slot_s"]["description"]


async def test_listing_output_schema(connect: Connect) -> None:
    async with connect() as client:
        tool = await get_tool(client)
    assert tool.output_schema is not None
    assert set(tool.output_schema["properties"]) == RUN_FIELDS
    assert tool.output_schema["required"] == ["status"]


async def test_listing_description(connect: Connect) -> None:
    async with connect() as client:
        tool = await get_tool(client)
    assert tool.description is not None
    assert "POOL_BUSY" in tool.description
    assert "jitter" in tool.description
    assert "POOL_UNREACHABLE" in tool.description
    assert "super_agent_result" in tool.description
    assert tool.annotations is not None
    assert tool.annotations.read_only_hint is False


async def test_listing_names_roots(connect: Connect, proxy_settings: Settings) -> None:
    async with connect() as client:
        properties = (await get_tool(client)).input_schema["properties"]
    root = proxy_settings.workspace_roots[0]
    assert root in properties["caller_cwd"]["description"]
    assert root in properties["prompt_file"]["description"]


async def test_call_ok(connect: Connect, pool: FakePoolClient) -> None:
    async with connect() as client:
        result = await call(client, task="review", prompt_text="hello", adapter="echo")
    run_id = pool.calls[0]["run_id"]
    assert result.is_error is False
    assert result.structured_content == {
        "status": "OK",
        "output": "echo: hello",
        "run_id": run_id,
        "adapter": "echo",
        "model": "echo",
        "usage": {"input_tokens": 3, "output_tokens": 4},
        "cost_usd": 0.25,
        "error": None,
        "notes": ["model_hint 'opus' is unknown; used echo"],
        "retry_after_s": None,
    }
    text = text_of(result)
    assert text.startswith(f"OK run_id={run_id} model=echo")
    assert text.endswith("\n\necho: hello")


async def test_call_passes_arguments(connect: Connect, pool: FakePoolClient) -> None:
    arguments = {
        "task": "edit",
        "prompt_file": "/srv/work/prompt.md",
        "adapter": "gemini",
        "cwd_mode": "caller",
        "caller_cwd": "/srv/work",
        "model_hint": "fast",
        "timeout_s": 42.5,
    }
    async with connect() as client:
        await call(client, **arguments)
    assert sent_arguments(pool) == {"prompt_text": None, **arguments}


async def test_call_applies_defaults(connect: Connect, pool: FakePoolClient) -> None:
    async with connect() as client:
        await call(client, task="review", prompt_text="hello")
    expected = dict(PARAMETER_DEFAULTS)
    del expected["wait_for_slot_s"]
    assert sent_arguments(pool) == {
        **expected,
        "task": "review",
        "prompt_text": "hello",
    }


async def test_call_busy(connect: Connect, pool: FakePoolClient) -> None:
    async with connect() as client:
        result = await call(client, task="busy", prompt_text="hello")
    assert result.is_error is True
    content = result.structured_content
    assert content["status"] == "POOL_BUSY"
    assert content["retry_after_s"] == 0.5
    assert content["error"] == {"code": "POOL_BUSY", "message": fake_pool.BUSY_MESSAGE}
    assert len(pool.calls) == 1
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
        # The client checks structured content against the schema only when
        # isError is false, so check the error results here.
        await client.session.validate_tool_result(TOOL_NAME, result)
    assert result.is_error is True
    assert result.structured_content["status"] == status
    assert result.structured_content["error"]["message"]


async def test_call_missing_task(connect: Connect, pool: FakePoolClient) -> None:
    async with connect() as client:
        result = await call(client, prompt_text="hello")
    assert result.is_error is True
    assert "task" in text_of(result)
    assert pool.calls == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"timeout_s": 3600.5}, "timeout_s 3600.5 is invalid"),
        ({"timeout_s": 0}, "timeout_s 0 is invalid"),
        ({"wait_for_slot_s": 601}, "wait_for_slot_s 601 is invalid: give 0 to 600 s"),
        ({"wait_for_slot_s": -1}, "wait_for_slot_s -1 is invalid"),
    ],
)
async def test_call_rejects_limits(
    connect: Connect, pool: FakePoolClient, arguments: dict[str, Any], message: str
) -> None:
    async with connect() as client:
        result = await call(client, task="review", prompt_text="hi", **arguments)
        await client.session.validate_tool_result(TOOL_NAME, result)
    assert result.is_error is True
    assert result.structured_content["status"] == "INVALID_REQUEST"
    assert result.structured_content["error"]["message"].startswith(message)
    assert pool.calls == []


async def test_timeout_names_maximum(connect: Connect) -> None:
    async with connect() as client:
        result = await call(client, task="review", prompt_text="hi", timeout_s=7200)
    message = result.structured_content["error"]["message"]
    assert message == (
        "timeout_s 7200 is invalid: give more than 0 and at most the pool's "
        "maximum of 3600 s"
    )


async def test_wait_retries_busy(
    connect: Connect, pool: FakePoolClient, fast_backoff: None
) -> None:
    progress = ProgressLog()
    async with connect() as client:
        result = await client.call_tool(
            TOOL_NAME,
            {"task": fake_pool.BUSY_THEN_OK, "prompt_text": "hi", "wait_for_slot_s": 5},
            progress_callback=progress,
        )
    first = pool.calls[0]["run_id"]
    assert result.is_error is False
    assert result.structured_content["status"] == "OK"
    assert [call["run_id"] for call in pool.calls] == [
        first,
        f"{first}-2",
        f"{first}-3",
    ]
    assert result.structured_content["run_id"] == f"{first}-3"
    busy = [m for m in progress.messages if m.startswith("all slots busy")]
    assert len(busy) == 2
    assert busy[0].startswith("all slots busy (attempt 1); trying again in ")


async def test_wait_gives_up(
    connect: Connect, pool: FakePoolClient, fast_backoff: None
) -> None:
    async with connect() as client:
        result = await call(client, task="busy", prompt_text="hi", wait_for_slot_s=0.2)
    assert result.is_error is True
    assert result.structured_content["status"] == "POOL_BUSY"
    assert len(pool.calls) >= 2
    notes = result.structured_content["notes"]
    assert notes[-1].startswith(f"POOL_BUSY on all {len(pool.calls)} attempts in ")


async def test_wait_skips_unreachable(
    connect: Connect, pool: FakePoolClient, fast_backoff: None
) -> None:
    async with connect() as client:
        result = await call(
            client, task="unreachable", prompt_text="hi", wait_for_slot_s=5
        )
    assert result.structured_content["status"] == "POOL_UNREACHABLE"
    assert len(pool.calls) == 1


async def test_progress_forwarded(connect: Connect, pool: FakePoolClient) -> None:
    progress = ProgressLog()
    async with connect() as client:
        result = await client.call_tool(
            TOOL_NAME,
            {"task": "review", "prompt_text": "hello"},
            progress_callback=progress,
        )
    run_id = pool.calls[0]["run_id"]
    assert result.is_error is False
    assert progress.without_ticks() == [
        f"submitted run_id={run_id}; waiting for a runner",
        f"started on runner r1 run_id={run_id}",
        fake_pool.PROGRESS_MESSAGE,
        f"finished status=OK run_id={run_id}",
    ]
    assert progress.values == sorted(set(progress.values))


async def test_progress_ticks(connect: Connect, pool: FakePoolClient) -> None:
    progress = ProgressLog()
    async with connect() as client:
        await client.call_tool(
            TOOL_NAME,
            {"task": "slow", "prompt_text": "hello"},
            progress_callback=progress,
        )
    run_id = pool.calls[0]["run_id"]
    ticks = [m for m in progress.messages if m.startswith("still")]
    assert ticks, progress.messages
    assert ticks[0].startswith("still running on runner r1, ")
    assert ticks[0].endswith(f" s elapsed run_id={run_id}")
    assert progress.values == sorted(set(progress.values))


async def test_cancel_reaches_pool(connect: Connect, pool: FakePoolClient) -> None:
    async with connect() as client:
        call_task = asyncio.create_task(call(client, task="hang", prompt_text="hi"))
        await asyncio.wait_for(pool.hanging.wait(), WAIT_S)
        call_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call_task
        await asyncio.wait_for(pool.cancelled.wait(), WAIT_S)
        await asyncio.wait_for(pool.cancel_called.wait(), WAIT_S)
    assert pool.cancels == [pool.calls[0]["run_id"]]


async def test_stopping_leaves_run(
    connect: Connect, pool: FakePoolClient, tools: mcp_proxy.tools.PoolTools
) -> None:
    tools.mark_stopping()
    async with connect() as client:
        call_task = asyncio.create_task(call(client, task="hang", prompt_text="hi"))
        await asyncio.wait_for(pool.hanging.wait(), WAIT_S)
        call_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call_task
        await asyncio.wait_for(pool.cancelled.wait(), WAIT_S)
    await tools.settle()
    assert pool.cancels == []
