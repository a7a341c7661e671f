"""The MCP server that offers the pool to agents, and `serve` over stdio or HTTP."""

# No `from __future__ import annotations`: the tools' parameter types are built
# per server, and the SDK can only resolve them from evaluated annotations.
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from importlib import metadata
from typing import Annotated, cast

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, ToolAnnotations

from bus.client import PoolClient
from bus.observability import serve_probes
from bus.settings import Settings
from mcp_proxy import arguments
from mcp_proxy.arguments import (
    AdapterArg,
    CwdModeArg,
    ModelHintArg,
    PromptTextArg,
    RunIdArg,
    TaskArg,
)
from mcp_proxy.descriptions import (
    CANCEL_DESCRIPTION,
    INSTRUCTIONS,
    RESULT_DESCRIPTION,
    RUN_DESCRIPTION,
    STATUS_DESCRIPTION,
)
from mcp_proxy.http import ListeningCallback, serve_http
from mcp_proxy.result import PoolStatusResult, RunLookupResult, RunToolResult
from mcp_proxy.security import StaticTokenVerifier, auth_settings, load_token
from mcp_proxy.tools import PoolTools, RunClient

logger = logging.getLogger(__name__)

SERVER_NAME = "superpool"
TOOL_NAME = "super_agent_run"
STATUS_TOOL = "super_agent_status"
RESULT_TOOL = "super_agent_result"
CANCEL_TOOL = "super_agent_cancel"
TOOL_NAMES = (TOOL_NAME, STATUS_TOOL, RESULT_TOOL, CANCEL_TOOL)
TRANSPORTS = ("stdio", "http")

ClientFactory = Callable[[Settings], AbstractAsyncContextManager[RunClient]]
ToolFunction = Callable[..., Awaitable[CallToolResult]]


def build_server(tools: PoolTools, *, token: str = "") -> MCPServer:
    """Create the MCP server with the four tools bound to `tools`.

    Args:
        tools: The tool implementations and the pool client they use.
        token: With a value, HTTP requests need "Authorization: Bearer <token>";
            stdio and in-memory clients are not affected.
    """
    server: MCPServer = MCPServer(
        name=SERVER_NAME,
        title="superpool",
        instructions=INSTRUCTIONS,
        version=_package_version(),
        token_verifier=StaticTokenVerifier(token) if token else None,
        auth=auth_settings() if token else None,
    )
    _add(
        server,
        _run_tool(tools),
        TOOL_NAME,
        "Run an agent in the superpool",
        RUN_DESCRIPTION,
        read_only=False,
    )
    _add(
        server,
        _status_tool(tools),
        STATUS_TOOL,
        "Show the superpool's slots",
        STATUS_DESCRIPTION,
        read_only=True,
    )
    _add(
        server,
        _result_tool(tools),
        RESULT_TOOL,
        "Read a superpool run's result",
        RESULT_DESCRIPTION,
        read_only=True,
    )
    _add(
        server,
        _cancel_tool(tools),
        CANCEL_TOOL,
        "Cancel a superpool run",
        CANCEL_DESCRIPTION,
        read_only=False,
    )
    return server


def _add(
    server: MCPServer,
    function: ToolFunction,
    name: str,
    title: str,
    description: str,
    *,
    read_only: bool,
) -> None:
    server.add_tool(
        function,
        name=name,
        title=title,
        description=description,
        annotations=ToolAnnotations(
            title=title,
            read_only_hint=read_only,
            idempotent_hint=read_only,
            open_world_hint=True,
        ),
    )


def _run_tool(tools: PoolTools) -> ToolFunction:
    prompt_file_type, caller_cwd_type = arguments.path_argument_types(tools.settings)
    timeout_type, wait_type = arguments.limit_argument_types(tools.settings)

    async def super_agent_run(
        task: TaskArg,
        prompt_text: PromptTextArg = None,
        prompt_file: prompt_file_type = None,  # type: ignore[valid-type]
        adapter: AdapterArg = "claude",
        cwd_mode: CwdModeArg = "isolated",
        caller_cwd: caller_cwd_type = None,  # type: ignore[valid-type]
        model_hint: ModelHintArg = None,
        timeout_s: timeout_type = None,  # type: ignore[valid-type]
        wait_for_slot_s: wait_type = 0.0,  # type: ignore[valid-type]
        *,
        ctx: Context,
    ) -> Annotated[CallToolResult, RunToolResult]:
        return await tools.run(
            ctx,
            task,
            timeout_s=timeout_s,
            wait_for_slot_s=wait_for_slot_s,
            prompt_text=prompt_text,
            prompt_file=prompt_file,
            adapter=adapter,
            cwd_mode=cwd_mode,
            caller_cwd=caller_cwd,
            model_hint=model_hint,
        )

    return super_agent_run


def _status_tool(tools: PoolTools) -> ToolFunction:
    async def super_agent_status() -> Annotated[CallToolResult, PoolStatusResult]:
        return await tools.status()

    return super_agent_status


def _result_tool(tools: PoolTools) -> ToolFunction:
    async def super_agent_result(
        run_id: RunIdArg,
    ) -> Annotated[CallToolResult, RunLookupResult]:
        return await tools.result(run_id)

    return super_agent_result


def _cancel_tool(tools: PoolTools) -> ToolFunction:
    async def super_agent_cancel(
        run_id: RunIdArg,
    ) -> Annotated[CallToolResult, RunToolResult]:
        return await tools.cancel(run_id)

    return super_agent_cancel


@contextlib.asynccontextmanager
async def _probes(settings: Settings, client: object) -> AsyncIterator[None]:
    """Serve /healthz, /readyz and the client's /metrics while the proxy runs."""
    metrics = getattr(client, "metrics", None)
    if settings.proxy_probe_port < 0 or metrics is None:
        yield
        return
    pool = cast("PoolClient", client)
    task = asyncio.create_task(
        serve_probes(
            metrics.registry,
            lambda: pool.connected,
            lambda: pool.connected and pool.provisioned,
            settings.probe_host,
            settings.proxy_probe_port,
        )
    )
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def serve(
    settings: Settings,
    transport: str,
    host: str | None = None,
    port: int | None = None,
    *,
    client_factory: ClientFactory | None = None,
    on_listening: ListeningCallback | None = None,
) -> None:
    """Serve the tools over stdio or streamable HTTP.

    The server runs until it is cancelled, and over stdio also until stdin
    closes. Either way the pool client is closed before this returns.

    Args:
        settings: Pool settings; the `proxy_*` fields configure HTTP.
        transport: "stdio" or "http" (streamable HTTP at the path `/mcp`).
        host: Address to bind for HTTP instead of `settings.proxy_host`.
        port: Port to bind for HTTP instead of `settings.proxy_port`; 0 picks a
            free port, which `on_listening` then receives in its URL.
        client_factory: Builds the pool client from the settings; the default
            is `bus.client.PoolClient`.
        on_listening: Called with the server's URL, such as
            "http://127.0.0.1:8765/mcp", once the HTTP server accepts
            connections. Unused with stdio.

    Raises:
        ValueError: `transport` is not "stdio" or "http".
        ConfigError: an HTTP setting is invalid, such as an unreadable
            `proxy_token_file`.
    """
    if transport not in TRANSPORTS:
        raise ValueError(
            f"transport {transport!r} is unknown: use {' or '.join(TRANSPORTS)}"
        )
    # Read before connecting, so a bad token file fails the start at once.
    token = load_token(settings) if transport == "http" else ""
    factory = client_factory or _open_pool_client
    async with factory(settings) as client, _probes(settings, client):
        tools = PoolTools(settings, client)
        server = build_server(tools, token=token)
        try:
            if transport == "stdio":
                logger.info("proxy serving transport=stdio")
                # NOTE: mcp 2.3.0 reads stdin in a worker thread that cancellation
                # cannot interrupt, so a cancelled stdio server returns only after
                # stdin delivers a line or EOF.
                await server.run_stdio_async()
            else:
                await serve_http(
                    server,
                    settings,
                    host or settings.proxy_host,
                    settings.proxy_port if port is None else port,
                    token=token,
                    on_listening=on_listening,
                    on_stopping=tools.mark_stopping,
                )
        finally:
            await tools.settle()


def _open_pool_client(settings: Settings) -> AbstractAsyncContextManager[RunClient]:
    return PoolClient(settings, name="superpool-proxy")


def _package_version() -> str:
    try:
        return metadata.version("superagent-pool")
    except metadata.PackageNotFoundError:
        return ""
