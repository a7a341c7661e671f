"""Fixtures for the MCP proxy tests that use the fake pool client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mcp import Client

from bus.settings import Settings
from mcp_proxy import PoolTools, build_server
from tests.mcp_proxy.fake_pool import FakePoolClient

# "legacy" runs the initialize handshake over in-memory streams; the version
# string runs the 2026-07-28 per-request era through the direct dispatcher.
MODES = ["legacy", "2026-07-28"]
# The progress ticker's interval in the in-memory tests, short enough for a
# test to catch it firing.
TEST_PROGRESS_INTERVAL_S = 0.05

Connect = Callable[[], Client]


@pytest.fixture
def proxy_settings(tmp_path: Path) -> Settings:
    roots = tmp_path / "roots"
    roots.mkdir()
    return Settings(
        nats_url="nats://127.0.0.1:1",
        workspace_roots=(str(roots),),
        proxy_host="127.0.0.1",
        proxy_port=0,
    )


@pytest.fixture
def pool() -> FakePoolClient:
    return FakePoolClient()


@pytest.fixture
def tools(proxy_settings: Settings, pool: FakePoolClient) -> PoolTools:
    return PoolTools(proxy_settings, pool, progress_interval_s=TEST_PROGRESS_INTERVAL_S)


@pytest.fixture(params=MODES)
def connect(request: pytest.FixtureRequest, tools: PoolTools) -> Connect:
    """Return a factory of in-memory clients of the proxy, in each protocol era.

    The tests enter the client themselves: the SDK's task groups must be
    entered and left in one task, and pytest-asyncio sets up and tears down
    an async fixture in different tasks.
    """
    server = build_server(tools)
    return lambda: Client(server, mode=request.param)
