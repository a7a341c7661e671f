"""Provider keys: loaded from files on runners, and never written anywhere."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS

from bus.client import PoolClient
from bus.credentials import FILE_SUFFIX, PROVIDER_KEY_NAMES, load_provider_keys
from bus.errors import ConfigError
from bus.settings import Settings
from bus.wire import Status, encode
from runner.adapters import claude, gemini
from tests.pool import running_pool
from tests.providers import (
    AnthropicServer,
    RecordedRequest,
    ScriptedResponse,
    anthropic_error,
)

PROMPT = "summarize the quarterly numbers, prompt marker 7f3a"
# Loggers of these packages must not log prompt text. The anthropic SDK
# does at DEBUG, in its request options.
OWN_PACKAGES = {"bus", "registry", "runner", "mcp_proxy", "superpool"}


@pytest.fixture
def provider_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Unset every provider key variable, and restore them after the test."""
    for name in PROVIDER_KEY_NAMES:
        for variable in (name, name + FILE_SUFFIX):
            # setenv records the original value (or its absence) for the
            # teardown, which a delenv of a missing variable does not.
            monkeypatch.setenv(variable, "")
            monkeypatch.delenv(variable)
    yield


def test_key_names_match_adapters() -> None:
    assert set(PROVIDER_KEY_NAMES) == {claude.API_KEY_ENV, *gemini.API_KEY_ENVS}


def test_load_key_from_file_variable(tmp_path: Path) -> None:
    key_file = tmp_path / "anthropic"
    key_file.write_text("sk-ant-fake-from-file\n")
    environ = {"ANTHROPIC_API_KEY_FILE": str(key_file)}
    loaded = load_provider_keys(Settings(), environ)
    assert loaded == ["ANTHROPIC_API_KEY"]
    assert environ["ANTHROPIC_API_KEY"] == "sk-ant-fake-from-file"


def test_load_keys_from_secrets_dir(tmp_path: Path) -> None:
    (tmp_path / "GEMINI_API_KEY").write_text("fake-gemini-key")
    (tmp_path / "ANTHROPIC_API_KEY").write_text("fake-anthropic-from-dir")
    environ = {"ANTHROPIC_API_KEY": "fake-anthropic-from-env"}
    loaded = load_provider_keys(Settings(secrets_dir=str(tmp_path)), environ)
    assert loaded == ["GEMINI_API_KEY"]
    assert environ["GEMINI_API_KEY"] == "fake-gemini-key"
    assert environ["ANTHROPIC_API_KEY"] == "fake-anthropic-from-env"
    assert "GOOGLE_API_KEY" not in environ


def test_load_key_twice_rejected(tmp_path: Path) -> None:
    environ = {"GEMINI_API_KEY": "fake", "GEMINI_API_KEY_FILE": str(tmp_path / "k")}
    with pytest.raises(ConfigError) as caught:
        load_provider_keys(Settings(), environ)
    assert str(caught.value) == (
        "both GEMINI_API_KEY and GEMINI_API_KEY_FILE are set; set only one"
    )


def test_load_key_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError) as caught:
        load_provider_keys(Settings(), {"ANTHROPIC_API_KEY_FILE": str(missing)})
    assert str(caught.value) == (
        f"ANTHROPIC_API_KEY_FILE {str(missing)!r} could not be read: No such file "
        "or directory; mount the secret there or correct the path"
    )


def _sent_key(request: RecordedRequest) -> str:
    # anthropic 2.16 sends the key as a bearer token, older versions as x-api-key.
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
    return request.headers.get("x-api-key", "") or bearer


def _echo_key(request: RecordedRequest) -> ScriptedResponse:
    """Reject the call with a 401 whose error text repeats the key it was sent."""
    key = _sent_key(request)
    return anthropic_error(401, "authentication_error", f"invalid API key: {key}")


async def test_key_never_leaks(
    settings: Settings,
    nc: NATS,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    provider_env: None,
) -> None:
    key = "sk-ant-fake-" + "k3y" * 8
    secrets_dir = tmp_path / "provider-secrets"
    secrets_dir.mkdir()
    (secrets_dir / "ANTHROPIC_API_KEY").write_text(key + "\n")
    caplog.set_level(logging.DEBUG)

    with AnthropicServer() as provider:
        provider.enqueue(_echo_key)
        runner_settings = settings.replace(
            secrets_dir=str(secrets_dir), anthropic_base_url=provider.url
        )
        async with (
            running_pool(runner_settings, runners=1),
            PoolClient(settings) as client,
        ):
            result = await client.run("leak", prompt_text=PROMPT, adapter="claude")
            record = await client.registry.get_run(result.run_id)
        sent = provider.requests

    stored = await nc.jetstream().get_last_msg(
        settings.results_stream, f"{settings.subject_prefix}.result.{result.run_id}"
    )

    assert _sent_key(sent[0]) == key
    assert result.status == Status.RUN_FAILED
    assert result.error is not None
    assert "[redacted]" in result.error.message
    assert key not in result.error.message
    assert key not in encode(result).decode()
    assert record is not None
    assert key not in msgspec.json.encode(record).decode()
    assert stored.data is not None
    assert key.encode() not in stored.data

    assert key not in caplog.text
    for log_record in caplog.records:
        assert key not in log_record.getMessage()
    for log_record in caplog.records:
        if log_record.name.split(".")[0] in OWN_PACKAGES:
            assert PROMPT not in log_record.getMessage()
