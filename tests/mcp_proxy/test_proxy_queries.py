"""super_agent_status, super_agent_result and super_agent_cancel in memory."""

from __future__ import annotations

import pytest
from mcp import Client

from mcp_proxy import CANCEL_TOOL, RESULT_TOOL, STATUS_TOOL, TOOL_NAME
from registry.registry import PoolStatus
from tests.mcp_proxy import fake_pool
from tests.mcp_proxy.conftest import Connect
from tests.mcp_proxy.fake_pool import FakePoolClient
from tests.mcp_proxy.proxy import text_of

STATUS_FIELDS = {
    "status",
    "slots_total",
    "slots_busy",
    "slots_free",
    "queued",
    "runners",
    "error",
}


async def output_schema(client: Client, name: str) -> dict[str, object]:
    listing = await client.list_tools()
    schema = {tool.name: tool for tool in listing.tools}[name].output_schema
    assert schema is not None
    return schema


async def test_status_schema(connect: Connect) -> None:
    async with connect() as client:
        schema = await output_schema(client, STATUS_TOOL)
    assert set(schema["properties"]) == STATUS_FIELDS  # type: ignore[arg-type]
    assert schema["required"] == ["status"]


async def test_status_reports_slots(connect: Connect) -> None:
    async with connect() as client:
        result = await client.call_tool(STATUS_TOOL, {})
    assert result.is_error is False
    content = result.structured_content
    assert content["status"] == "OK"
    assert content["slots_total"] == 3
    assert content["slots_busy"] == 1
    assert content["slots_free"] == 2
    assert content["queued"] == 1
    assert content["error"] is None
    assert content["runners"][0] == {
        "runner_id": "runner-0",
        "state": "ready",
        "slots": 3,
        "busy": 1,
        "runs": ["a"],
        "version": "0.1.0",
        "host": "",
    }
    assert content["runners"][1]["state"] == "draining"
    lines = text_of(result).splitlines()
    assert lines[0] == "OK: 2 of 3 slots free, 1 busy, 1 queued, 2 runners"
    assert lines[1] == "runner-0 ready 1/3 busy"


async def test_status_unreachable(connect: Connect, pool: FakePoolClient) -> None:
    pool.unreachable = True
    async with connect() as client:
        result = await client.call_tool(STATUS_TOOL, {})
        await client.session.validate_tool_result(STATUS_TOOL, result)
    assert result.is_error is True
    content = result.structured_content
    assert content["status"] == "POOL_UNREACHABLE"
    assert content["runners"] == []
    assert fake_pool.UNREACHABLE_MESSAGE in content["error"]["message"]
    assert "nats://127.0.0.1:1" in content["error"]["message"]
    assert text_of(result).startswith("POOL_UNREACHABLE: ")


async def test_status_no_runners(
    connect: Connect, pool: FakePoolClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def empty_status() -> PoolStatus:
        return PoolStatus()

    monkeypatch.setattr(pool, "status", empty_status)
    async with connect() as client:
        result = await client.call_tool(STATUS_TOOL, {})
    assert result.is_error is False
    assert result.structured_content["slots_total"] == 0
    assert "super_agent_run returns POOL_UNREACHABLE" in text_of(result)


async def test_result_after_run(connect: Connect) -> None:
    async with connect() as client:
        ran = await client.call_tool(TOOL_NAME, {"task": "review", "prompt_text": "hi"})
        run_id = ran.structured_content["run_id"]
        result = await client.call_tool(RESULT_TOOL, {"run_id": run_id})
    assert result.is_error is False
    assert result.structured_content == ran.structured_content


async def test_result_unknown_run(connect: Connect) -> None:
    async with connect() as client:
        result = await client.call_tool(RESULT_TOOL, {"run_id": "no-such-run"})
        await client.session.validate_tool_result(RESULT_TOOL, result)
    assert result.is_error is True
    content = result.structured_content
    assert content["status"] == "NO_RESULT"
    assert content["run_id"] == "no-such-run"
    assert content["error"] == {
        "code": "NO_RESULT",
        "message": "no result yet or unknown run_id 'no-such-run'",
    }
    lines = text_of(result).splitlines()
    assert lines[0] == "NO_RESULT: no result yet or unknown run_id 'no-such-run'"
    assert "super_agent_result again later" in lines[1]


async def test_result_schema_allows_no_result(connect: Connect) -> None:
    async with connect() as client:
        schema = await output_schema(client, RESULT_TOOL)
    assert "NO_RESULT" in str(schema["properties"]["status"])  # type: ignore[index]


async def test_result_unreachable(connect: Connect) -> None:
    async with connect() as client:
        result = await client.call_tool(
            RESULT_TOOL, {"run_id": fake_pool.UNREACHABLE_ID}
        )
    assert result.is_error is True
    assert result.structured_content["status"] == "POOL_UNREACHABLE"
    assert (
        fake_pool.UNREACHABLE_MESSAGE in result.structured_content["error"]["message"]
    )


@pytest.mark.parametrize("tool", [RESULT_TOOL, CANCEL_TOOL])
async def test_bad_run_id_rejected(
    connect: Connect, pool: FakePoolClient, tool: str
) -> None:
    async with connect() as client:
        result = await client.call_tool(tool, {"run_id": "a.b"})
    assert result.is_error is True
    assert result.structured_content["status"] == "INVALID_REQUEST"
    assert result.structured_content["error"]["message"] == (
        "run_id 'a.b' is invalid: use 1 to 128 letters, digits, '_' or '-'"
    )
    assert pool.cancels == []


async def test_cancel_running(connect: Connect, pool: FakePoolClient) -> None:
    async with connect() as client:
        result = await client.call_tool(CANCEL_TOOL, {"run_id": "r-7"})
    # The cancel succeeded, so isError is false although the run produced no output.
    assert result.is_error is False
    assert result.structured_content["status"] == "CANCELLED"
    assert result.structured_content["run_id"] == "r-7"
    assert pool.cancels == ["r-7"]


async def test_cancel_finished(connect: Connect, pool: FakePoolClient) -> None:
    async with connect() as client:
        result = await client.call_tool(CANCEL_TOOL, {"run_id": fake_pool.STORED_ID})
    assert result.is_error is False
    assert result.structured_content["status"] == "OK"
    assert result.structured_content["output"] == "echo: stored"


async def test_cancel_unreachable(connect: Connect) -> None:
    async with connect() as client:
        result = await client.call_tool(
            CANCEL_TOOL, {"run_id": fake_pool.UNREACHABLE_ID}
        )
    assert result.is_error is True
    assert result.structured_content["status"] == "POOL_UNREACHABLE"
