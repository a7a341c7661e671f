"""A nats-server started with manifests/nats/auth.conf, and settings per user.

Every test gets its own server, so the pool uses the default names that the
permissions in the config are written for. Passwords are random per test and
reach the server through its environment, as `$VAR` references.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from bus.connection import connect
from bus.provision import provision
from bus.server import EmbeddedServer
from bus.settings import Settings
from tests.conftest import make_settings
from tests.pool import wait_until

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "nats"
AUTH_CONFIG = MANIFESTS / "auth.conf"
# The users in auth.conf, each with its password variable and inbox prefix.
USERS = {
    "admin": ("NATS_ADMIN_PASSWORD", "_INBOX_admin"),
    "runner": ("NATS_RUNNER_PASSWORD", "_INBOX_runner"),
    "ops": ("NATS_OPS_PASSWORD", "_INBOX_ops"),
    "agent-a": ("NATS_AGENT_A_PASSWORD", "_INBOX.agent-a"),
    "agent-b": ("NATS_AGENT_B_PASSWORD", "_INBOX.agent-b"),
}
# The names that permissions.conf is written for.
DEFAULT_NAMES = {
    "subject_prefix": "pool",
    "runs_stream": "POOL_RUNS",
    "results_stream": "POOL_RESULTS",
    "consumer": "runners",
    "registry_bucket": "pool-registry",
    "service_name": "superpool",
}


def server_env_value(password: str) -> str:
    """Return `password` as nats-server reads it from a `$VAR` reference.

    nats-server parses the variable's value as config text, so an unquoted
    value such as "12345" becomes a number and "-x" a parse error.
    """
    return f'"{password}"'


@dataclass
class AuthServer:
    """The server, the test's passwords and a way to build settings per user."""

    server: EmbeddedServer
    passwords: dict[str, str]
    base: Settings
    secrets_path: Path
    errors: dict[str, list[str]] = field(default_factory=dict)

    def settings(self, user: str, **overrides: object) -> Settings:
        """Return settings that log in as `user` with a password file."""
        password_file = self.secrets_path / f"{user}.password"
        password_file.write_text(self.passwords[user] + "\n")
        password_file.chmod(0o600)
        values: dict[str, object] = {
            "nats_user": user,
            "nats_password_file": str(password_file),
            "inbox_prefix": USERS[user][1],
        }
        values.update(overrides)
        return self.base.replace(**values)

    async def connect(self, user: str, **overrides: object) -> NATS:
        """Connect as `user`; errors the server sends land in `errors[user]`."""
        seen = self.errors.setdefault(user, [])

        async def on_error(exc: Exception) -> None:
            seen.append(str(exc))

        return await connect(
            self.settings(user, **overrides), name=f"test-{user}", error_cb=on_error
        )

    async def expect_error(self, user: str, message: str) -> None:
        """Wait until the server sent `message` to a connection of `user`."""
        await wait_until(
            lambda: self.errors.get(user, []), lambda seen: message in seen
        )

    def violations(self) -> list[str]:
        """Return the permission violations that the server logged."""
        return [line for line in self.server.output if "Violation" in line]


@pytest.fixture
async def auth_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AuthServer]:
    """Start nats-server with auth.conf and provision the pool as admin."""
    passwords = {user: secrets.token_urlsafe(24) for user in USERS}
    for user, (variable, _) in USERS.items():
        monkeypatch.setenv(variable, server_env_value(passwords[user]))
    server = EmbeddedServer(tmp_path / "nats", config_file=AUTH_CONFIG)
    await asyncio.to_thread(server.start)
    secrets_path = tmp_path / "secrets"
    secrets_path.mkdir()
    base = make_settings(server.url, tmp_path, **DEFAULT_NAMES)
    auth = AuthServer(server, passwords, base, secrets_path)
    try:
        admin = await auth.connect("admin")
        await provision(admin.jetstream(timeout=base.request_timeout), auth.base)
        await admin.close()
        yield auth
    finally:
        await asyncio.to_thread(server.stop)
