"""Fixtures for the MCP proxy tests that use the fake pool client."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.settings import Settings
from tests.mcp_proxy.fake_pool import FakePoolClient


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
