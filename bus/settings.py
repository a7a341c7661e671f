"""One settings object for every part of the pool.

Each field can be set from the environment as `SUPERPOOL_<FIELD>` (upper case).
Lists are separated by the platform's path separator (`:` on Linux), so
`SUPERPOOL_WORKSPACE_ROOTS=/srv/a:/srv/b` names two roots.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from bus.credentials import check_credential_settings, masked_repr
from bus.errors import ConfigError

ENV_PREFIX = "SUPERPOOL_"


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Names, limits and timeouts shared by the client, the runners and the proxy."""

    nats_url: str = "nats://127.0.0.1:4222"
    # Subjects are `<subject_prefix>.run.<task>` and `<subject_prefix>.result.<id>`.
    subject_prefix: str = "pool"
    runs_stream: str = "POOL_RUNS"
    results_stream: str = "POOL_RESULTS"
    consumer: str = "runners"
    registry_bucket: str = "pool-registry"
    service_name: str = "superpool"
    # Stream replicas: 1 on one machine, 3 on a NATS cluster.
    replicas: int = 1

    # Fleet-wide ceiling of admitted but unfinished runs (3 slots x 3 runners).
    max_inflight: int = 9
    slots: int = 3
    # Results stay readable on the results stream this long.
    results_max_age_s: float = 24 * 3600
    # Largest run request the stream accepts, in bytes.
    max_request_bytes: int = 256 * 1024

    # Bound for every single request to NATS (stream info, publish, KV get).
    request_timeout: float = 2.0
    # How long a queued run may wait for a runner to start it.
    pickup_timeout: float = 5.0
    # Extra wait past a run's own timeout for its result to arrive.
    result_margin_s: float = 5.0
    default_timeout_s: float = 300.0
    max_timeout_s: float = 3600.0

    # A runner heartbeats this often; its registry key expires after heartbeat_ttl_s.
    heartbeat_interval_s: float = 1.0
    heartbeat_ttl_s: int = 3
    # Unacked messages come back after ack_wait_s; runners send in-progress
    # acks every ack_wait_s / 3.
    ack_wait_s: float = 15.0
    max_deliver: int = 5
    # Running runs get this long to finish when a runner stops.
    drain_timeout_s: float = 30.0

    # Roots under which caller_cwd and prompt_file must resolve. Empty means
    # that caller mode and prompt files are rejected.
    workspace_roots: tuple[str, ...] = ()
    # Parent of the isolated per-run workspaces.
    work_root: str = ""

    # Largest prompt_file a run may read, in bytes.
    max_prompt_file_bytes: int = 1024 * 1024

    # Model calls.
    max_output_tokens: int = 4096
    anthropic_base_url: str = ""
    gemini_base_url: str = ""

    # Model agents: catalog, routing, file tools, loop bounds and provider
    # retries (docs/adapters.md).
    # Model catalog and routing rules (TOML); empty uses the shipped files.
    catalog_path: str = ""
    routing_path: str = ""
    # Model calls per run; a model still calling tools after that many ends
    # the run with RUN_FAILED.
    max_turns: int = 16
    # Bytes of tool results sent back to the model over one run; passing it
    # ends the run with RUN_FAILED.
    max_tool_output_bytes: int = 1024 * 1024
    # Largest slice of a file that one read_file call returns, in bytes.
    max_read_bytes: int = 128 * 1024
    # In cwd_mode "caller" the file tools only read, unless this is true.
    allow_caller_writes: bool = False
    # Retries after a 408, 429, 5xx or connection failure, per model call.
    provider_max_retries: int = 3
    # First backoff wait without a retry-after header, doubled per retry.
    provider_retry_base_s: float = 0.5
    # Longest wait before one retry; a longer retry-after fails the run.
    provider_retry_max_s: float = 60.0

    # Probes and metrics: /healthz, /readyz and /metrics on this port of
    # each runner (and of the proxy in stdio mode). 0 picks a free port, -1
    # turns the server off.
    probe_host: str = "127.0.0.1"
    probe_port: int = 9090
    # The proxy's own probe port, so a runner and a proxy fit on one host.
    proxy_probe_port: int = 9091

    # The MCP proxy's HTTP transport.
    proxy_host: str = "127.0.0.1"
    proxy_port: int = 8765

    # MCP proxy: Host names, bearer token, sessions and tool limits
    # (docs/agents.md); mcp_proxy/security.py checks them at start.
    # Host header values accepted besides the loopback names, separated by
    # commas (a port such as "proxy:8765" rules out the path separator). An
    # entry without a port matches any port; "*" turns the check off.
    proxy_allowed_hosts: str = ""
    # When set, HTTP requests need "Authorization: Bearer <token>". Give the
    # token or a file that contains it, not both.
    proxy_token: str = ""
    proxy_token_file: str = ""
    # True: no MCP sessions, so any of several replicas behind one Service can
    # take any request. A handshake-era client's cancel then no longer
    # reaches the call, so one proxy keeps sessions.
    proxy_stateless_http: bool = False
    # Ceiling of super_agent_run's wait_for_slot_s.
    proxy_max_wait_for_slot_s: float = 600.0

    # Security: NATS credentials, inbox prefix, secrets and size limits
    # (docs/security.md). Use one auth method; bus/credentials.py checks it.
    nats_user: str = ""
    nats_password: str = ""
    nats_password_file: str = ""
    nats_token: str = ""
    nats_token_file: str = ""
    nats_nkey_seed_file: str = ""
    nats_creds_file: str = ""
    # Replies and events reach the client under this prefix. A per-agent
    # prefix such as "_INBOX.alice" lets the server keep agents apart.
    inbox_prefix: str = "_INBOX"
    # A directory of provider key files named like the variables, such as a
    # Kubernetes secret mount; read by runners only.
    secrets_dir: str = ""
    # Largest prompt_text, in UTF-8 bytes; the rest of a request must fit
    # in max_request_bytes too.
    max_prompt_bytes: int = 192 * 1024

    def __post_init__(self) -> None:
        _check_nats_url(self.nats_url)
        _check_port(self, "proxy_port", lowest=0)
        _check_port(self, "probe_port", lowest=-1)
        _check_port(self, "proxy_probe_port", lowest=-1)
        check_credential_settings(self)
        _check_positive(self, "max_prompt_bytes", "max_request_bytes")
        _check_positive(self, "max_inflight", "slots", "max_deliver", "replicas")
        _check_positive(self, "request_timeout", "pickup_timeout", "ack_wait_s")
        _check_positive(self, "heartbeat_interval_s", "heartbeat_ttl_s")
        _check_positive(self, "max_turns", "max_tool_output_bytes", "max_read_bytes")
        _check_positive(self, "provider_retry_base_s", "provider_retry_max_s")
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise ConfigError(
                "heartbeat_ttl_s",
                f"heartbeat_ttl_s ({self.heartbeat_ttl_s}) must be larger than "
                f"heartbeat_interval_s ({self.heartbeat_interval_s}), or live "
                "runners expire between two heartbeats",
            )
        for root in self.workspace_roots:
            if not os.path.isabs(root):
                raise ConfigError(
                    "workspace_roots",
                    f"workspace root {root!r} is relative; give an absolute path",
                )

    def __repr__(self) -> str:
        return masked_repr(self)

    @property
    def run_subjects(self) -> str:
        return f"{self.subject_prefix}.run.>"

    @property
    def result_subjects(self) -> str:
        return f"{self.subject_prefix}.result.>"

    @property
    def work_root_path(self) -> Path:
        if self.work_root:
            return Path(self.work_root)
        return Path(tempfile.gettempdir()) / "superpool-work"

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with `changes` applied and validated again."""
        return msgspec.structs.replace(self, **changes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Build settings from `SUPERPOOL_*` variables, then apply `overrides`.

        Raises:
            ConfigError: a variable does not parse as its field's type.
        """
        environ = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for field in msgspec.structs.fields(cls):
            name = ENV_PREFIX + field.name.upper()
            if name in environ:
                raw[field.name] = _parse_env(field.name, field.type, environ[name])
        raw.update(
            {key: value for key, value in overrides.items() if value is not None}
        )
        try:
            return msgspec.convert(raw, cls)
        except msgspec.ValidationError as exc:
            raise ConfigError("settings", f"invalid setting: {exc}") from None


def _parse_env(name: str, annotation: Any, text: str) -> Any:
    if annotation is str:
        return text
    if annotation is bool:
        return text.strip().lower() in {"1", "true", "yes", "on"}
    if annotation in (int, float):
        try:
            return annotation(text)
        except ValueError:
            raise ConfigError(
                name,
                f"{ENV_PREFIX}{name.upper()}={text!r} is not a valid "
                f"{annotation.__name__}",
            ) from None
    # tuple[str, ...]
    return tuple(part for part in text.split(os.pathsep) if part)


NATS_URL_SCHEMES = ("nats", "tls", "ws", "wss")


def _check_nats_url(nats_url: str) -> None:
    # nats-py spins without awaiting on an empty server list, so a bad URL
    # must fail here, before any connect.
    urls = [url.strip() for url in nats_url.split(",") if url.strip()]
    if not urls:
        raise ConfigError(
            "nats_url",
            "SUPERPOOL_NATS_URL is empty; give a URL such as nats://127.0.0.1:4222",
        )
    for url in urls:
        parsed = urlsplit(url)
        if parsed.scheme not in NATS_URL_SCHEMES or not parsed.hostname:
            raise ConfigError(
                "nats_url",
                f"NATS URL {url!r} is invalid: use nats://HOST:PORT (or tls://, ws://, "
                "wss://), several separated by commas",
            )


def _check_port(settings: Settings, name: str, *, lowest: int) -> None:
    value = getattr(settings, name)
    if not lowest <= value <= 65535:
        off = ", or -1 to turn it off" if lowest < 0 else ""
        raise ConfigError(
            name,
            f"{name} {value} is invalid: use 0 to 65535 (0 picks a free port{off})",
        )


def _check_positive(settings: Settings, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if value <= 0:
            raise ConfigError(name, f"{name} must be greater than 0, got {value}")


def child_environ(settings: Settings) -> dict[str, str]:
    """Return this process's environment with `settings` as `SUPERPOOL_*` variables.

    A `superpool` child process started with it reads the same settings.
    """
    environ = dict(os.environ)
    for name, value in msgspec.structs.asdict(settings).items():
        if isinstance(value, tuple):
            value = os.pathsep.join(value)
        environ[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return environ
