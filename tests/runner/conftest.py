"""Fixtures for the adapter tests: loopback provider servers and fake keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.providers import (
    FAKE_ANTHROPIC_KEY,
    FAKE_GEMINI_KEY,
    SDK_ENV,
    AnthropicServer,
    GeminiServer,
)
from tests.runner.providers_pair import Provider, start_provider


@pytest.fixture(autouse=True)
def clean_sdk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SDK_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def anthropic_server() -> Iterator[AnthropicServer]:
    with AnthropicServer() as server:
        yield server


@pytest.fixture
def gemini_server() -> Iterator[GeminiServer]:
    with GeminiServer() as server:
        yield server


@pytest.fixture
def anthropic_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_ANTHROPIC_KEY)
    return FAKE_ANTHROPIC_KEY


@pytest.fixture
def gemini_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_GEMINI_KEY)
    return FAKE_GEMINI_KEY


@pytest.fixture
def closed_url() -> str:
    """Return the URL of a loopback port on which nothing listens any more."""
    with AnthropicServer() as server:
        return server.url


@pytest.fixture(params=["claude", "gemini"])
def provider(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Provider]:
    """Each adapter with its loopback server and a fake key, one per test run."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_ANTHROPIC_KEY)
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_GEMINI_KEY)
    started = start_provider(request.param)
    yield started
    started.server.stop()
