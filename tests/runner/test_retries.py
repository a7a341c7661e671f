"""Provider failures: retries with retry-after, fail-fast statuses, lost servers."""

from __future__ import annotations

import email.utils
import logging
import time
from pathlib import Path

import pytest

from bus.errors import AdapterError
from runner.adapters.base import parse_retry_after
from runner.adapters.claude import ClaudeAdapter
from runner.adapters.gemini import GeminiAdapter
from tests.providers import (
    FAKE_ANTHROPIC_KEY,
    FAKE_GEMINI_KEY,
    AnthropicServer,
    ScriptedResponse,
    anthropic_error,
    gemini_error,
)
from tests.runner.agents import claude_run, gemini_run
from tests.runner.providers_pair import Provider

RETRY_LOGGER = "runner.adapters.base"


def rate_limited(provider: Provider, retry_after: str) -> ScriptedResponse:
    headers = {"retry-after": retry_after}
    if provider.name == "claude":
        return anthropic_error(429, "rate_limit_error", "slow down", headers=headers)
    return gemini_error(429, "RESOURCE_EXHAUSTED", "quota", headers=headers)


def unavailable(provider: Provider) -> ScriptedResponse:
    if provider.name == "claude":
        return anthropic_error(529, "overloaded_error", "Overloaded")
    return gemini_error(503, "UNAVAILABLE", "The model is overloaded.")


def unauthorized(provider: Provider, key: str) -> ScriptedResponse:
    if provider.name == "claude":
        return anthropic_error(401, "authentication_error", f"invalid x-api-key {key}")
    return gemini_error(401, "UNAUTHENTICATED", f"API key not valid: {key}")


def key_of(provider: Provider) -> str:
    return FAKE_ANTHROPIC_KEY if provider.name == "claude" else FAKE_GEMINI_KEY


def retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == RETRY_LOGGER and record.levelno == logging.WARNING
    ]


async def test_retry_honours_retry_after(
    provider: Provider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider.server.enqueue(rate_limited(provider, "1"), provider.text_turn("late"))
    caplog.set_level(logging.INFO)
    started = time.monotonic()

    output = await provider.adapter.run(provider.run(tmp_path))

    [record] = retry_records(caplog)
    assert output.output == "late"
    assert time.monotonic() - started >= 1.0
    assert len(provider.server.requests) == 2
    assert "retrying" in record.getMessage()
    assert "wait_s=1.000" in record.getMessage()
    assert "HTTP 429" in record.getMessage()


async def test_retry_gives_up_after_limit(
    provider: Provider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider.server.enqueue(*[unavailable(provider) for _ in range(3)])

    with pytest.raises(AdapterError) as caught:
        await provider.adapter.run(provider.run(tmp_path, provider_max_retries=2))

    assert "gave up after 3 attempts" in str(caught.value)
    assert len(provider.server.requests) == 3
    assert len(retry_records(caplog)) == 2


async def test_retry_then_success_keeps_usage(
    provider: Provider, tmp_path: Path
) -> None:
    provider.server.enqueue(
        unavailable(provider),
        provider.text_turn("fine", input_tokens=11, output_tokens=3),
    )

    output = await provider.adapter.run(provider.run(tmp_path))

    assert output.output == "fine"
    assert output.usage.input_tokens == 11
    assert output.usage.output_tokens == 3


async def test_unauthorized_fails_at_once(
    provider: Provider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = key_of(provider)
    provider.server.enqueue(unauthorized(provider, key))
    caplog.set_level(logging.DEBUG)

    with pytest.raises(AdapterError) as caught:
        await provider.adapter.run(provider.run(tmp_path))

    message = str(caught.value)
    expected_env = (
        "ANTHROPIC_API_KEY" if provider.name == "claude" else "GEMINI_API_KEY"
    )
    assert "HTTP 401" in message
    assert expected_env in message
    assert key not in message
    assert caught.value.__cause__ is None
    assert len(provider.server.requests) == 1
    assert retry_records(caplog) == []
    assert all(key not in record.getMessage() for record in caplog.records)


async def test_forbidden_fails_at_once(provider: Provider, tmp_path: Path) -> None:
    if provider.name == "claude":
        reply = anthropic_error(403, "permission_error", "not allowed")
    else:
        reply = gemini_error(403, "PERMISSION_DENIED", "not allowed")
    provider.server.enqueue(reply)

    with pytest.raises(AdapterError) as caught:
        await provider.adapter.run(provider.run(tmp_path))

    assert "HTTP 403" in str(caught.value)
    assert "_API_KEY" in str(caught.value)
    assert len(provider.server.requests) == 1


async def test_claude_unreachable_retried(
    tmp_path: Path,
    closed_url: str,
    anthropic_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = claude_run(tmp_path, closed_url, provider_max_retries=2)

    with pytest.raises(AdapterError) as caught:
        await ClaudeAdapter().run(run)

    message = str(caught.value)
    assert "could not be reached" in message
    assert "gave up after 3 attempts" in message
    assert len(retry_records(caplog)) == 2


async def test_gemini_unreachable_retried(
    tmp_path: Path, closed_url: str, gemini_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    run = gemini_run(tmp_path, closed_url, provider_max_retries=2)

    with pytest.raises(AdapterError) as caught:
        await GeminiAdapter().run(run)

    message = str(caught.value)
    assert "could not be reached" in message
    assert "gave up after 3 attempts" in message
    assert len(retry_records(caplog)) == 2


async def test_retry_after_above_max_fails_fast(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    anthropic_server.enqueue(
        anthropic_error(429, "rate_limit_error", "wait", headers={"retry-after": "5"})
    )
    run = claude_run(tmp_path, anthropic_server.url, provider_retry_max_s=2.0)
    started = time.monotonic()

    with pytest.raises(AdapterError) as caught:
        await ClaudeAdapter().run(run)

    assert time.monotonic() - started < 1.0
    assert "not retried: a wait of 5 s" in str(caught.value)
    assert len(anthropic_server.requests) == 1


def test_parse_retry_after_forms() -> None:
    in_ten_s = email.utils.formatdate(time.time() + 10, usegmt=True)

    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 8.0 < (parse_retry_after({"retry-after": in_ten_s}) or 0) <= 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-4"}) == 0.0
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None
