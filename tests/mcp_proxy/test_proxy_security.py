"""The Host header check, the bearer token and the health route over HTTP."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from bus.errors import ConfigError
from bus.settings import Settings
from mcp_proxy import STATUS_TOOL, serve
from mcp_proxy.security import check_exposure, load_token, transport_security
from tests.mcp_proxy.fake_pool import FakePoolClient
from tests.mcp_proxy.proxy import PROJECT_ROOT, http_client, running_proxy

# An obviously fake token.
TOKEN = "test-token-not-a-secret"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "security-test", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
LOOPBACK_PATTERNS = [
    "127.0.0.1",
    "127.0.0.1:*",
    "localhost",
    "localhost:*",
    "[::1]",
    "[::1]:*",
]


async def post_initialize(url: str, **headers: str) -> httpx2.Response:
    """Send an initialize request with extra headers, such as Host."""
    async with httpx2.AsyncClient(timeout=10.0) as http:
        return await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **headers})


def test_hosts_default_loopback(proxy_settings: Settings) -> None:
    security = transport_security(proxy_settings, "0.0.0.0")
    assert security.enable_dns_rebinding_protection is True
    assert security.allowed_hosts == LOOPBACK_PATTERNS
    assert "http://localhost:*" in security.allowed_origins
    assert "https://127.0.0.1" in security.allowed_origins


def test_hosts_add_entries(proxy_settings: Settings) -> None:
    settings = proxy_settings.replace(
        proxy_allowed_hosts=" superpool-proxy , proxy.pool.svc:8765,"
    )
    hosts = transport_security(settings, "::").allowed_hosts
    assert hosts == [
        *LOOPBACK_PATTERNS,
        "superpool-proxy",
        "superpool-proxy:*",
        "proxy.pool.svc:8765",
    ]


def test_hosts_add_bind_address(proxy_settings: Settings) -> None:
    assert transport_security(proxy_settings, "10.1.2.3").allowed_hosts[-2:] == [
        "10.1.2.3",
        "10.1.2.3:*",
    ]
    assert transport_security(proxy_settings, "fd00::5").allowed_hosts[-2:] == [
        "[fd00::5]",
        "[fd00::5]:*",
    ]


def test_hosts_star_disables_check(proxy_settings: Settings) -> None:
    settings = proxy_settings.replace(proxy_allowed_hosts="*")
    assert (
        transport_security(settings, "0.0.0.0").enable_dns_rebinding_protection is False
    )


def test_hosts_reject_url(proxy_settings: Settings) -> None:
    settings = proxy_settings.replace(proxy_allowed_hosts="http://proxy:8765")
    with pytest.raises(ConfigError, match="entry 'http://proxy:8765' is invalid"):
        transport_security(settings, "0.0.0.0")


def test_hosts_from_env() -> None:
    settings = Settings.from_env({"SUPERPOOL_PROXY_ALLOWED_HOSTS": "a:8765,b"})
    assert settings.proxy_allowed_hosts == "a:8765,b"


def test_stateless_from_env() -> None:
    assert Settings().proxy_stateless_http is False
    settings = Settings.from_env({"SUPERPOOL_PROXY_STATELESS_HTTP": "true"})
    assert settings.proxy_stateless_http is True


def test_token_from_value(proxy_settings: Settings) -> None:
    assert load_token(proxy_settings) == ""
    assert load_token(proxy_settings.replace(proxy_token=f" {TOKEN}\n")) == TOKEN


def test_token_from_file(proxy_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    assert load_token(proxy_settings.replace(proxy_token_file=str(path))) == TOKEN


def test_token_both_rejected(proxy_settings: Settings, tmp_path: Path) -> None:
    settings = proxy_settings.replace(proxy_token=TOKEN, proxy_token_file="/x")
    with pytest.raises(ConfigError, match="set only one"):
        load_token(settings)


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_token_file_unusable(
    proxy_settings: Settings, tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    settings = proxy_settings.replace(proxy_token_file=str(path))
    with pytest.raises(ConfigError, match="proxy_token_file") as raised:
        load_token(settings)
    assert str(path) in str(raised.value)


async def test_serve_rejects_token_file(
    proxy_settings: Settings, pool: FakePoolClient, tmp_path: Path
) -> None:
    settings = proxy_settings.replace(proxy_token_file=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="could not be read"):
        await serve(settings, "http", port=0, client_factory=lambda _: pool)
    assert pool.entered is False


def test_exposure_warnings(
    proxy_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mcp_proxy.security"):
        check_exposure(proxy_settings, "127.0.0.1", "")
        assert caplog.messages == []
        check_exposure(proxy_settings, "0.0.0.0", "")
    assert len(caplog.messages) == 2
    assert "accepts only loopback Host headers" in caplog.messages[0]
    assert "SUPERPOOL_PROXY_ALLOWED_HOSTS" in caplog.messages[0]
    assert "without a bearer token" in caplog.messages[1]
    assert all(TOKEN not in message for message in caplog.messages)


async def test_http_rejects_host(
    proxy_settings: Settings, pool: FakePoolClient
) -> None:
    async with running_proxy(proxy_settings, lambda _: pool) as proxy:
        rejected = await post_initialize(proxy.url, Host="rebound.example:80")
        accepted = await post_initialize(proxy.url)
    assert rejected.status_code == 421
    assert rejected.text == "Invalid Host header"
    assert accepted.status_code == 200


async def test_http_allows_named_host(
    proxy_settings: Settings, pool: FakePoolClient
) -> None:
    settings = proxy_settings.replace(proxy_allowed_hosts="superpool-proxy")
    async with running_proxy(settings, lambda _: pool) as proxy:
        with_port = await post_initialize(proxy.url, Host="superpool-proxy:8765")
        without_port = await post_initialize(proxy.url, Host="superpool-proxy")
        other = await post_initialize(proxy.url, Host="superpool-proxy.evil:8765")
    assert with_port.status_code == 200
    assert without_port.status_code == 200
    assert other.status_code == 421


async def test_http_rejects_origin(
    proxy_settings: Settings, pool: FakePoolClient
) -> None:
    async with running_proxy(proxy_settings, lambda _: pool) as proxy:
        response = await post_initialize(proxy.url, Origin="http://rebound.example")
    assert response.status_code == 403


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
)
async def test_http_rejects_token(
    proxy_settings: Settings, pool: FakePoolClient, authorization: str | None
) -> None:
    settings = proxy_settings.replace(proxy_token=TOKEN)
    headers = {"Authorization": authorization} if authorization else {}
    async with running_proxy(settings, lambda _: pool) as proxy:
        response = await post_initialize(proxy.url, **headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith(
        'Bearer error="invalid_token"'
    )
    assert response.json()["error"] == "invalid_token"
    assert pool.calls == []


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_http_accepts_token(
    proxy_settings: Settings,
    pool: FakePoolClient,
    tmp_path: Path,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "token"
    path.write_text(TOKEN)
    settings = proxy_settings.replace(proxy_token_file=str(path))
    async with (
        running_proxy(settings, lambda _: pool) as proxy,
        http_client(proxy.url, mode=mode, token=TOKEN) as client,
    ):
        result = await client.call_tool(STATUS_TOOL, {})
    assert result.is_error is False
    assert result.structured_content["status"] == "OK"
    assert "token=required" in caplog.text
    assert TOKEN not in caplog.text


async def test_http_token_and_host(
    proxy_settings: Settings, pool: FakePoolClient
) -> None:
    settings = proxy_settings.replace(proxy_token=TOKEN)
    async with running_proxy(settings, lambda _: pool) as proxy:
        response = await post_initialize(
            proxy.url, Host="rebound.example", Authorization=f"Bearer {TOKEN}"
        )
    assert response.status_code == 421


async def test_health_open(proxy_settings: Settings, pool: FakePoolClient) -> None:
    settings = proxy_settings.replace(proxy_token=TOKEN)
    async with running_proxy(settings, lambda _: pool) as proxy:
        url = proxy.url.removesuffix("/mcp") + "/healthz"
        async with httpx2.AsyncClient(timeout=10.0) as http:
            response = await http.get(url, headers={"Host": "10.0.0.7:8765"})
            metadata = await http.get(
                proxy.url.removesuffix("/mcp") + "/.well-known/oauth-protected-resource"
            )
    assert response.status_code == 200
    assert response.text == "ok\n"
    # The token check publishes no OAuth metadata, so clients learn no issuer.
    assert metadata.status_code == 404


@pytest.mark.parametrize(
    ("command", "exit_code"),
    [(["-m", "superpool.cli", "proxy"], 1), (["-m", "mcp_proxy"], 2)],
)
async def test_cli_token_file_missing(
    tmp_path: Path, command: list[str], exit_code: int
) -> None:
    missing = tmp_path / "missing-token"
    args = [
        *command,
        "--transport",
        "http",
        "--port",
        "0",
        "--token-file",
        str(missing),
    ]
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "SUPERPOOL_NATS_URL": "nats://127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == exit_code
    assert f"ConfigError: proxy_token_file '{missing}' could not be read" in done.stderr
