"""The claude and gemini adapters, driving the real SDKs against loopback servers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bus.errors import AdapterError, InvalidRequestError
from runner.adapters import ADAPTER_NAMES, get_adapter
from runner.adapters.base import AdapterOutput, AdapterRun
from runner.adapters.claude import ClaudeAdapter
from runner.adapters.echo import EchoAdapter
from runner.adapters.gemini import GeminiAdapter
from tests.providers import (
    FAKE_GEMINI_KEY,
    FAKE_GOOGLE_KEY,
    AnthropicServer,
    GeminiServer,
    ScriptedResponse,
    anthropic_error,
    anthropic_message,
    gemini_blocked,
    gemini_error,
    gemini_response,
)
from tests.runner.agents import (
    MAX_OUTPUT_TOKENS,
    PROMPT,
    QUICK_S,
    claude_run,
    gemini_run,
)


async def run_claude(run: AdapterRun) -> AdapterOutput:
    return await ClaudeAdapter().run(run)


async def run_gemini(run: AdapterRun) -> AdapterOutput:
    return await GeminiAdapter().run(run)


def assert_no_secret(error: BaseException, secret: str) -> None:
    assert secret not in str(error)
    # The SDK error may contain the key, so the AdapterError must not chain it.
    assert error.__cause__ is None
    assert error.__suppress_context__


# get_adapter


def test_get_adapter_returns_cached_instances() -> None:
    assert get_adapter("claude") is get_adapter("claude")
    assert isinstance(get_adapter("claude"), ClaudeAdapter)
    assert isinstance(get_adapter("gemini"), GeminiAdapter)
    assert isinstance(get_adapter("echo"), EchoAdapter)


def test_get_adapter_names_match_adapters() -> None:
    for name in ADAPTER_NAMES:
        assert get_adapter(name).name == name


def test_get_adapter_rejects_unknown_name() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        get_adapter("gpt")
    message = str(caught.value)
    assert "'gpt'" in message
    for name in ("claude", "gemini", "echo"):
        assert name in message
    assert caught.value.field == "adapter"


def test_adapters_import_no_sdk() -> None:
    code = (
        "import sys, runner.adapters, runner.catalog\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in "
        "('anthropic', 'google', 'httpx2')]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == ""


# claude


async def test_claude_sends_model_and_prompt(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    await run_claude(claude_run(tmp_path, anthropic_server.url, "claude-haiku-4-5"))

    [request] = anthropic_server.requests
    assert request.method == "POST"
    assert request.path == "/v1/messages"
    assert request.body["model"] == "claude-haiku-4-5"
    assert request.body["messages"] == [{"role": "user", "content": PROMPT}]
    assert request.body["max_tokens"] == MAX_OUTPUT_TOKENS
    assert "anthropic-version" in request.headers


async def test_claude_sends_api_key(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    await run_claude(claude_run(tmp_path, anthropic_server.url))

    [request] = anthropic_server.requests
    # anthropic 2.16.0 sends the key as a bearer token, not as x-api-key.
    sent = request.headers.get("authorization", "") + request.headers.get(
        "x-api-key", ""
    )
    assert anthropic_key in sent


async def test_claude_bounds_request_timeout(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    await run_claude(claude_run(tmp_path, anthropic_server.url, timeout_s=7.0))

    [request] = anthropic_server.requests
    assert 0 < float(request.headers["x-stainless-timeout"]) <= 7.0


async def test_claude_returns_text_and_usage(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    body = anthropic_message(
        model="claude-sonnet-4-6-20250929",
        content=[
            {"type": "text", "text": "2, 3"},
            {"type": "text", "text": " and 5."},
        ],
        input_tokens=1234,
        output_tokens=56,
    )
    anthropic_server.enqueue(ScriptedResponse(body=body))

    output = await run_claude(claude_run(tmp_path, anthropic_server.url))

    assert output.output == "2, 3 and 5."
    assert output.model == "claude-sonnet-4-6-20250929"
    assert output.usage.input_tokens == 1234
    assert output.usage.output_tokens == 56
    assert output.notes == ()


async def test_claude_notes_max_tokens_stop(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    body = anthropic_message(
        model="claude-sonnet-4-6", text="2, 3 and", stop_reason="max_tokens"
    )
    anthropic_server.enqueue(ScriptedResponse(body=body))

    output = await run_claude(claude_run(tmp_path, anthropic_server.url))

    assert output.output == "2, 3 and"
    [note] = output.notes
    assert f"max_output_tokens={MAX_OUTPUT_TOKENS}" in note


async def test_claude_missing_key_sends_nothing(
    tmp_path: Path, anthropic_server: AnthropicServer
) -> None:
    with pytest.raises(AdapterError) as caught:
        await run_claude(claude_run(tmp_path, anthropic_server.url))

    assert caught.value.adapter == "claude"
    assert "ANTHROPIC_API_KEY is not set" in str(caught.value)
    assert anthropic_server.requests == []


async def test_claude_401_hides_key(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    anthropic_server.enqueue(
        anthropic_error(
            401, "authentication_error", f"invalid x-api-key {anthropic_key}"
        )
    )

    with pytest.raises(AdapterError) as caught:
        await run_claude(claude_run(tmp_path, anthropic_server.url))

    message = str(caught.value)
    assert_no_secret(caught.value, anthropic_key)
    assert "HTTP 401" in message
    assert "authentication_error" in message
    assert "invalid x-api-key [redacted]" in message
    assert "ANTHROPIC_API_KEY" in message
    assert len(anthropic_server.requests) == 1


async def test_claude_429_reports_retry_after(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    anthropic_server.enqueue(
        anthropic_error(
            429,
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
            headers={"retry-after": "30"},
        )
    )

    with pytest.raises(AdapterError) as caught:
        await run_claude(
            claude_run(tmp_path, anthropic_server.url, provider_max_retries=0)
        )

    message = str(caught.value)
    assert "HTTP 429 rate_limit_error" in message
    assert "retry-after 30 s" in message
    assert "req_01TestRequest" in message
    assert len(anthropic_server.requests) == 1


async def test_claude_retries_429_then_answers(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    # retry-after-ms keeps the SDK's wait before its retry at 1 ms.
    anthropic_server.enqueue(
        anthropic_error(
            429, "rate_limit_error", "slow down", headers={"retry-after-ms": "1"}
        )
    )

    output = await run_claude(claude_run(tmp_path, anthropic_server.url))

    assert output.output == "Hello."
    assert len(anthropic_server.requests) == 2


async def test_claude_500_gives_adapter_error(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    anthropic_server.enqueue(anthropic_error(500, "api_error", "Internal server error"))

    with pytest.raises(AdapterError) as caught:
        await run_claude(
            claude_run(tmp_path, anthropic_server.url, provider_max_retries=0)
        )

    message = str(caught.value)
    assert "HTTP 500 api_error: Internal server error" in message
    assert "retry later" in message


async def test_claude_non_json_error_body(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    anthropic_server.enqueue(
        ScriptedResponse(
            status=502,
            body=b"<html>Bad Gateway</html>",
            headers={"content-type": "text/html"},
        )
    )

    with pytest.raises(AdapterError) as caught:
        await run_claude(
            claude_run(tmp_path, anthropic_server.url, provider_max_retries=0)
        )

    assert "HTTP 502" in str(caught.value)
    assert "Bad Gateway" in str(caught.value)


async def test_claude_retry_after_past_timeout_fails_fast(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    # Waiting the full retry-after would pass the run's timeout of 2 s.
    anthropic_server.enqueue(
        anthropic_error(
            429, "rate_limit_error", "slow down", headers={"retry-after": "3600"}
        )
    )
    started = time.monotonic()

    with pytest.raises(AdapterError) as caught:
        await run_claude(claude_run(tmp_path, anthropic_server.url, timeout_s=2.0))

    message = str(caught.value)
    assert time.monotonic() - started < 1.0
    assert "HTTP 429 rate_limit_error" in message
    assert "not retried: a wait of 3.6e+03 s would pass the run's timeout" in message
    assert len(anthropic_server.requests) == 1


async def test_claude_unreachable_gives_adapter_error(
    tmp_path: Path, closed_url: str, anthropic_key: str
) -> None:
    with pytest.raises(AdapterError) as caught:
        await run_claude(claude_run(tmp_path, closed_url, provider_max_retries=0))

    message = str(caught.value)
    assert "could not be reached" in message
    assert closed_url in message
    assert_no_secret(caught.value, anthropic_key)


# gemini


async def test_gemini_sends_model_and_prompt(
    tmp_path: Path, gemini_server: GeminiServer, gemini_key: str
) -> None:
    await run_gemini(gemini_run(tmp_path, gemini_server.url, "gemini-2.5-pro"))

    [request] = gemini_server.requests
    assert request.method == "POST"
    assert request.path.endswith("/models/gemini-2.5-pro:generateContent")
    assert request.body["contents"] == [{"role": "user", "parts": [{"text": PROMPT}]}]
    assert request.body["generationConfig"]["maxOutputTokens"] == MAX_OUTPUT_TOKENS
    assert request.headers["x-goog-api-key"] == gemini_key


async def test_gemini_bounds_request_timeout(
    tmp_path: Path, gemini_server: GeminiServer, gemini_key: str
) -> None:
    await run_gemini(gemini_run(tmp_path, gemini_server.url, timeout_s=7.0))

    [request] = gemini_server.requests
    assert request.headers["x-server-timeout"] == "7"


async def test_gemini_returns_text_and_usage(
    tmp_path: Path, gemini_server: GeminiServer, gemini_key: str
) -> None:
    body = gemini_response(
        model_version="gemini-2.5-flash",
        parts=[
            {"text": "Primes need care.", "thought": True},
            {"text": "2, 3"},
            {"text": " and 5."},
        ],
        prompt_tokens=1200,
        candidates_tokens=40,
        thoughts_tokens=25,
    )
    gemini_server.enqueue(ScriptedResponse(body=body))

    output = await run_gemini(
        gemini_run(tmp_path, gemini_server.url, "gemini-2.5-flash")
    )

    assert output.output == "2, 3 and 5."
    assert output.model == "gemini-2.5-flash"
    assert output.usage.input_tokens == 1200
    # Thinking tokens are billed as output.
    assert output.usage.output_tokens == 65
    assert output.notes == ()


async def test_gemini_notes_max_tokens_stop(
    tmp_path: Path, gemini_server: GeminiServer, gemini_key: str
) -> None:
    body = gemini_response(
        model_version="gemini-2.5-flash-lite",
        text="2, 3 and",
        finish_reason="MAX_TOKENS",
    )
    gemini_server.enqueue(ScriptedResponse(body=body))

    output = await run_gemini(gemini_run(tmp_path, gemini_server.url))

    assert output.output == "2, 3 and"
    [note] = output.notes
    assert f"max_output_tokens={MAX_OUTPUT_TOKENS}" in note


async def test_gemini_prefers_gemini_api_key(
    tmp_path: Path,
    gemini_server: GeminiServer,
    gemini_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", FAKE_GOOGLE_KEY)

    await run_gemini(gemini_run(tmp_path, gemini_server.url))

    [request] = gemini_server.requests
    assert request.headers["x-goog-api-key"] == FAKE_GEMINI_KEY


async def test_gemini_falls_back_to_google_api_key(
    tmp_path: Path, gemini_server: GeminiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", FAKE_GOOGLE_KEY)

    await run_gemini(gemini_run(tmp_path, gemini_server.url))

    [request] = gemini_server.requests
    assert request.headers["x-goog-api-key"] == FAKE_GOOGLE_KEY


async def test_gemini_missing_key_sends_nothing(
    tmp_path: Path, gemini_server: GeminiServer
) -> None:
    with pytest.raises(AdapterError) as caught:
        await run_gemini(gemini_run(tmp_path, gemini_server.url))

    message = str(caught.value)
    assert caught.value.adapter == "gemini"
    assert "GEMINI_API_KEY" in message
    assert "GOOGLE_API_KEY" in message
    assert gemini_server.requests == []


async def test_gemini_401_hides_key(
    tmp_path: Path, gemini_server: GeminiServer, gemini_key: str
) -> None:
    gemini_server.enqueue(
        gemini_error(401, "UNAUTHENTICATED", f"API key not valid: {gemini_key}")
    )

    with pytest.raises(AdapterError) as caught:
        await run_gemini(gemini_run(tmp_path, gemini_server.url))

    message = str(caught.value)
    assert_no_secret(caught.value, gemini_key)
    assert "HTTP 401 UNAUTHENTICATED" in message
    assert "API key not valid: [redacted]" in message
    assert "GEMINI_API_KEY" in message
    assert len(gemini_server.requests) == 1


async def test_gemini_429_reports_retry_after(
    tmp_path: Path, gemini_server: GeminiServer, gemini_key: str
) -> None:
    gemini_server.enqueue(
        gemini_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
            headers={"retry-after": "30"},
        )
    )

    with pytest.raises(AdapterError) as caught:
        await run_gemini(
            gemini_run(tmp_path, gemini_server.url, provider_max_retries=0)
        )

    message = str(caught.value)
    assert "HTTP 429 RESOURCE_EXHAUSTED" in message
    assert "retry-after 30 s" in message
    assert len(gemini_server.requests) == 1


async def test_gemini_500_gives_adapter_error(
    tmp_path: Path, gemini_server: GeminiServer, gemini_key: str
) -> None:
    gemini_server.enqueue(
        gemini_error(500, "INTERNAL", "An internal error has occurred.")
    )

    with pytest.raises(AdapterError) as caught:
        await run_gemini(
            gemini_run(tmp_path, gemini_server.url, provider_max_retries=0)
        )

    message = str(caught.value)
    assert "HTTP 500 INTERNAL: An internal error has occurred." in message
    assert "retry later" in message


async def test_gemini_backoff_past_timeout_fails_fast(
    tmp_path: Path, gemini_server: GeminiServer, gemini_key: str
) -> None:
    # The first backoff, 0.5 to 1 s, is longer than the 0.2 s the run allows.
    gemini_server.enqueue(gemini_error(503, "UNAVAILABLE", "The model is overloaded."))
    run = gemini_run(
        tmp_path, gemini_server.url, timeout_s=0.2, provider_retry_base_s=1.0
    )
    started = time.monotonic()

    with pytest.raises(AdapterError) as caught:
        await run_gemini(run)

    message = str(caught.value)
    assert time.monotonic() - started < QUICK_S
    assert "HTTP 503 UNAVAILABLE: The model is overloaded." in message
    assert "not retried" in message
    assert len(gemini_server.requests) == 1


async def test_gemini_timeout_ends_slow_call(
    tmp_path: Path, gemini_server: GeminiServer, gemini_key: str
) -> None:
    gemini_server.enqueue(lambda request: (time.sleep(1.0), ScriptedResponse())[1])
    started = time.monotonic()

    with pytest.raises(TimeoutError) as caught:
        await run_gemini(gemini_run(tmp_path, gemini_server.url, timeout_s=0.2))

    assert time.monotonic() - started < 1.0
    assert "0.2 s" in str(caught.value)


async def test_gemini_blocked_prompt_gives_adapter_error(
    tmp_path: Path, gemini_server: GeminiServer, gemini_key: str
) -> None:
    body = gemini_blocked("SAFETY", model_version="gemini-2.5-flash-lite")
    gemini_server.enqueue(ScriptedResponse(body=body))

    with pytest.raises(AdapterError) as caught:
        await run_gemini(gemini_run(tmp_path, gemini_server.url))

    assert "blocked the prompt (block_reason SAFETY)" in str(caught.value)


async def test_gemini_unreachable_gives_adapter_error(
    tmp_path: Path, closed_url: str, gemini_key: str
) -> None:
    with pytest.raises(AdapterError) as caught:
        await run_gemini(gemini_run(tmp_path, closed_url, provider_max_retries=0))

    message = str(caught.value)
    assert "could not be reached" in message
    assert closed_url in message
    assert_no_secret(caught.value, gemini_key)
