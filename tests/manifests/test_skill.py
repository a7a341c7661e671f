"""The agent skill against the proxy's current super_agent_run tool."""

from __future__ import annotations

import json
import re
from typing import Any

from mcp import Client

from bus.backoff import DEFAULT_BASE_S, DEFAULT_MAX_S
from bus.settings import Settings
from bus.wire import ADAPTERS, Status
from mcp_proxy import PoolTools, build_server
from mcp_proxy.server import TOOL_NAMES
from runner.catalog import Catalog
from tests.manifests.loading import MANIFESTS
from tests.mcp_proxy.fake_pool import FakePoolClient

SKILL = (MANIFESTS / "skills" / "super-agent-skill.md").read_text()


async def run_tool_properties() -> dict[str, Any]:
    """Return the input schema properties of super_agent_run."""
    tools = PoolTools(Settings(workspace_roots=("/workspace",)), FakePoolClient())
    async with Client(build_server(tools), mode="legacy") as client:
        listing = await client.list_tools()
    schema = {tool.name: tool.input_schema for tool in listing.tools}
    return schema["super_agent_run"]["properties"]


def table_row(name: str) -> str:
    """Return the skill's parameter table row of `name`."""
    rows = [line for line in SKILL.splitlines() if line.startswith(f"| `{name}` |")]
    assert len(rows) == 1, f"the skill has {len(rows)} rows for {name}"
    return rows[0]


async def test_skill_lists_every_parameter() -> None:
    properties = await run_tool_properties()
    documented = re.findall(r"^\| `(\w+)` \| .+ \| .+ \|$", SKILL, flags=re.M)
    parameters = [name for name in documented if name in properties]
    assert parameters == list(properties)
    assert "timeout_s" in parameters
    assert "wait_for_slot_s" in parameters


async def test_skill_defaults_match() -> None:
    properties = await run_tool_properties()
    for name, schema in properties.items():
        default = schema.get("default")
        cell = table_row(name).split(" | ")[1]
        expected = "(required)" if name == "task" else f"`{json.dumps(default)}`"
        assert cell == expected, name


def test_skill_names_tools_and_adapters() -> None:
    for tool in TOOL_NAMES:
        assert f"`{tool}`" in SKILL, tool
    for adapter in ADAPTERS:
        assert f"`{adapter}`" in SKILL, adapter


def test_skill_covers_statuses() -> None:
    for status in Status:
        assert f"| `{status.value}` |" in SKILL, status


def test_skill_backoff_matches_code() -> None:
    assert f"min({DEFAULT_MAX_S:g}, {DEFAULT_BASE_S:g} * 2 ** (n - 1))" in SKILL


def test_skill_model_hints_exist() -> None:
    catalog = Catalog.load()
    hints = re.findall(r"`model_hint=\"([\w.-]+)\"`", SKILL)
    examples = table_row("model_hint").split("such as ")[1].split(". ")[0]
    table = re.findall(r"`([\w.-]+)`", examples)
    assert len(hints) >= 3
    assert len(table) >= 6
    for hint in {*hints, *table}:
        found = [catalog.find(adapter, hint) for adapter in ("claude", "gemini")]
        assert any(found), hint


def test_skill_gemini_default_cheapest() -> None:
    catalog = Catalog.load()
    assert catalog.default_model("gemini") == catalog.cheapest("gemini").name


def test_skill_has_front_matter() -> None:
    header = SKILL.split("---\n")[1]
    assert header.startswith("name: superpool\n")
    assert "description:" in header
