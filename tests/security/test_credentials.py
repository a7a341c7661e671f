"""NATS credential settings: validation, files, masking and each auth method."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import nkeys
import pytest

from bus.client import PoolClient
from bus.connection import connect
from bus.credentials import connect_options
from bus.errors import ConfigError, PoolError
from bus.server import EmbeddedServer
from bus.settings import Settings
from bus.wire import Status
from runner.runner import Runner
from tests.security.conftest import AuthServer, server_env_value

INVALID = [
    (
        {"nats_user": "a", "nats_password": "p", "nats_token": "t"},
        "NATS credentials for user and password and token are set; set only one "
        "auth method for a connection",
    ),
    (
        {"nats_token_file": "/x", "nats_nkey_seed_file": "/y"},
        "NATS credentials for token and nkey seed are set; set only one auth "
        "method for a connection",
    ),
    (
        {"nats_password": "p"},
        "a NATS password is set but SUPERPOOL_NATS_USER is empty; set the user",
    ),
    (
        {"nats_user": "a", "nats_password": "p", "nats_password_file": "/x"},
        "both SUPERPOOL_NATS_PASSWORD and SUPERPOOL_NATS_PASSWORD_FILE are set; "
        "set only one",
    ),
    (
        {"nats_token": "t", "nats_token_file": "/x"},
        "both SUPERPOOL_NATS_TOKEN and SUPERPOOL_NATS_TOKEN_FILE are set; set only one",
    ),
    (
        {"nats_url": "nats://runner:hunter2@127.0.0.1:4222"},
        "SUPERPOOL_NATS_URL contains credentials, and the URL is written to logs "
        "and error messages; move them to SUPERPOOL_NATS_USER and "
        "SUPERPOOL_NATS_PASSWORD_FILE (or SUPERPOOL_NATS_TOKEN_FILE)",
    ),
    (
        {"nats_url": "nats://127.0.0.1:4222,nats://s3cret@127.0.0.1:4223"},
        "SUPERPOOL_NATS_URL contains credentials, and the URL is written to logs "
        "and error messages; move them to SUPERPOOL_NATS_USER and "
        "SUPERPOOL_NATS_PASSWORD_FILE (or SUPERPOOL_NATS_TOKEN_FILE)",
    ),
]


@pytest.mark.parametrize(("values", "message"), INVALID)
def test_settings_invalid_credentials(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "prefix", ["", "_INBOX.>", "_INBOX.*", "a..b", "a b", "x" * 129]
)
def test_settings_invalid_inbox_prefix(prefix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(inbox_prefix=prefix)
    assert str(caught.value) == (
        f"inbox_prefix {prefix!r} is invalid: use at most 128 characters of "
        "dot-separated subject tokens without spaces, '*' or '>', such as "
        "'_INBOX.alice'"
    )


def test_settings_repr_masks_secrets() -> None:
    settings = Settings(nats_user="agent-a", nats_password="hunter2-fake")
    token_settings = Settings(nats_token="t0ken-fake", proxy_token="pr0xy-fake")
    assert "hunter2-fake" not in repr(settings)
    assert "nats_password='***'" in repr(settings)
    assert "nats_user='agent-a'" in repr(settings)
    assert "t0ken-fake" not in str(token_settings)
    assert "nats_token='***'" in repr(token_settings)
    assert "pr0xy-fake" not in repr(token_settings)
    assert "proxy_token='***'" in repr(token_settings)


def test_settings_from_env_files(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("  fake-password\n")
    settings = Settings.from_env(
        {
            "SUPERPOOL_NATS_USER": "runner",
            "SUPERPOOL_NATS_PASSWORD_FILE": str(password_file),
            "SUPERPOOL_INBOX_PREFIX": "_INBOX_runner",
        }
    )
    options = connect_options(settings)
    assert options == {
        "inbox_prefix": "_INBOX_runner",
        "user": "runner",
        "password": "fake-password",
    }


def test_connect_options_each_method(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("fake-secret\n")
    assert connect_options(Settings(nats_token_file=str(secret))) == {
        "inbox_prefix": "_INBOX",
        "token": "fake-secret",
    }
    assert connect_options(Settings(nats_token="fake-token")) == {
        "inbox_prefix": "_INBOX",
        "token": "fake-token",
    }
    assert connect_options(Settings(nats_nkey_seed_file=str(secret))) == {
        "inbox_prefix": "_INBOX",
        "nkeys_seed": str(secret),
    }
    assert connect_options(Settings(nats_creds_file=str(secret))) == {
        "inbox_prefix": "_INBOX",
        "user_credentials": str(secret),
    }
    assert connect_options(Settings()) == {"inbox_prefix": "_INBOX"}


def test_connect_options_bad_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfesecret")
    missing = tmp_path / "missing"
    cases = [
        (empty, f"nats_token_file {str(empty)!r} is empty; write the secret in it"),
        (binary, f"nats_token_file {str(binary)!r} is not UTF-8 text"),
        (
            missing,
            f"nats_token_file {str(missing)!r} could not be read: No such file or "
            "directory; mount the secret there or correct the path",
        ),
    ]
    for path, message in cases:
        with pytest.raises(ConfigError) as caught:
            connect_options(Settings(nats_token_file=str(path)))
        assert str(caught.value) == message


async def test_password_value_login(auth_server: AuthServer) -> None:
    settings = auth_server.base.replace(
        nats_user="ops",
        nats_password=auth_server.passwords["ops"],
        inbox_prefix="_INBOX_ops",
    )
    nc = await connect(settings, name="test-ops")
    info = await nc.jetstream().stream_info("POOL_RUNS")
    await nc.close()
    assert info.config.name == "POOL_RUNS"


async def test_runner_wrong_password(auth_server: AuthServer) -> None:
    wrong = auth_server.secrets_path / "wrong"
    wrong.write_text("not-the-password")
    settings = auth_server.settings(
        "runner", nats_password_file=str(wrong), request_timeout=0.5
    )
    with pytest.raises(PoolError) as caught:
        await Runner(settings, runner_id="runner-1").start()
    assert str(caught.value) == (
        f"NATS at {settings.nats_url} rejected the credentials of "
        "superpool-runner-runner-1 (authorization violation); check "
        "SUPERPOOL_NATS_USER and its password, token, nkey seed or creds file"
    )


async def test_agent_default_inbox_unusable(
    auth_server: AuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent that keeps the default inbox prefix gets no replies."""
    settings = auth_server.settings(
        "agent-a", inbox_prefix="_INBOX", request_timeout=0.5
    )
    async with PoolClient(settings) as client:
        result = await client.run("hello", prompt_text="hi", adapter="echo")
    denied = [
        record.getMessage()
        for record in caplog.records
        if record.name == "bus.connection" and record.levelno == logging.WARNING
    ]
    assert result.status == Status.POOL_UNREACHABLE
    assert result.error is not None
    assert result.error.message == (
        "the pool did not respond: the registry did not respond: registry bucket "
        "pool-registry did not respond within 0.5 s; escalate or run the task "
        "inline instead of retrying at once"
    )
    assert denied[0].startswith(
        "nats permission denied name=superpool-client error=nats: permissions "
        'violation for subscription to "_inbox.'
    )


def _write_config(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "server.conf"
    config.write_text(text)
    return config


async def _started(tmp_path: Path, config: Path) -> EmbeddedServer:
    server = EmbeddedServer(tmp_path / "nats", config_file=config)
    await asyncio.to_thread(server.start)
    return server


async def test_token_file_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "fake-token-" + os.urandom(8).hex()
    monkeypatch.setenv("NATS_TEST_TOKEN", server_env_value(token))
    config = _write_config(tmp_path, "authorization { token: $NATS_TEST_TOKEN }\n")
    server = await _started(tmp_path, config)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    try:
        settings = Settings(nats_url=server.url, nats_token_file=str(token_file))
        nc = await connect(settings, name="test-token")
        connected = nc.is_connected
        await nc.close()
        with pytest.raises(PoolError) as caught:
            await connect(
                Settings(nats_url=server.url, nats_token="wrong", request_timeout=0.5),
                name="test-token",
            )
    finally:
        await asyncio.to_thread(server.stop)
    assert connected
    assert "rejected the credentials of test-token" in str(caught.value)


async def test_nkey_seed_login(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public_key = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed + b"\n")
    other_seed_file = tmp_path / "other.nk"
    other_seed_file.write_bytes(
        nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER) + b"\n"
    )
    config = _write_config(
        tmp_path,
        f"authorization {{ users: [ {{nkey: {public_key}}} ] }}\n",
    )
    server = await _started(tmp_path, config)
    try:
        settings = Settings(nats_url=server.url, nats_nkey_seed_file=str(seed_file))
        nc = await connect(settings, name="test-nkey")
        connected = nc.is_connected
        await nc.close()
        with pytest.raises(PoolError) as caught:
            await connect(
                settings.replace(
                    request_timeout=0.5, nats_nkey_seed_file=str(other_seed_file)
                ),
                name="test-nkey",
            )
    finally:
        await asyncio.to_thread(server.stop)
    assert connected
    assert "rejected the credentials of test-nkey" in str(caught.value)
