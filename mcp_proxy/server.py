"""The MCP server that offers the pool to agents as the tool `super_agent_run`."""

# No `from __future__ import annotations`: the tool's parameter types are built
# per server, and the SDK can only resolve them from evaluated annotations.
import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from importlib import metadata
from typing import Annotated, Protocol

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from bus.client import PoolClient
from bus.settings import Settings
from bus.wire import ADAPTERS, RunEvent, RunResult
from mcp_proxy.http import ListeningCallback, serve_http
from mcp_proxy.result import RunToolResult, to_call_tool_result

logger = logging.getLogger(__name__)

SERVER_NAME = "superpool"
TOOL_NAME = "super_agent_run"
TRANSPORTS = ("stdio", "http")

TOOL_DESCRIPTION = """\
Run one prompt on a fresh one-shot agent from the shared superpool and return \
its final answer.

Use it to hand a self-contained subtask (a review, a summary, a focused change) \
to another agent that works in parallel with you. The agent gets only the \
prompt and, with cwd_mode "caller", the files under caller_cwd. It cannot ask \
you questions, so put everything it needs into the prompt.

Read `status` in the result:
- OK: `output` contains the answer.
- POOL_BUSY: every runner slot is taken. Wait `retry_after_s` seconds plus \
random jitter, then call again, and double the wait after each further \
POOL_BUSY.
- POOL_UNREACHABLE: the pool cannot be reached, so retrying soon will not \
help. Tell the user, or do the work yourself.
- INVALID_REQUEST: an argument is wrong and `error.message` names it. Fix it \
and call again.
- RUN_FAILED, RUN_TIMEOUT, CANCELLED: the run gave no answer; `error.message` \
says why.
"""

INSTRUCTIONS = (
    "superpool runs one-shot agents on a shared pool. Call super_agent_run to "
    "delegate a self-contained subtask; on POOL_BUSY back off with jitter and "
    "retry, on POOL_UNREACHABLE do not retry blindly."
)

TaskArg = Annotated[
    str,
    Field(
        description=(
            "Label for the kind of work, such as 'review' or 'summarize': 1 to 64 "
            "letters, digits, '_' or '-'. The pool uses it in subjects and logs."
        )
    ),
]
PromptTextArg = Annotated[
    str | None,
    Field(
        description=(
            "The complete prompt for the agent. Give exactly one of prompt_text "
            "and prompt_file."
        )
    ),
]
AdapterArg = Annotated[
    str,
    Field(
        description=(
            f"Agent backend, one of {', '.join(ADAPTERS)}. 'echo' returns the "
            "prompt without calling a model, for tests."
        )
    ),
]
CwdModeArg = Annotated[
    str,
    Field(
        description=(
            "'isolated' runs the agent in a new empty directory. 'caller' runs it "
            "in caller_cwd, where it can read and change your files."
        )
    ),
]
ModelHintArg = Annotated[
    str | None,
    Field(
        description=(
            "Preferred model. The pool may choose another one and then says why "
            "in `notes`."
        )
    ),
]

EventCallback = Callable[[RunEvent], Awaitable[None]]


class RunClient(Protocol):
    """The part of `bus.client.PoolClient` that the proxy uses."""

    async def run(
        self,
        task: str,
        *,
        prompt_text: str | None = None,
        prompt_file: str | None = None,
        adapter: str = "claude",
        cwd_mode: str = "isolated",
        caller_cwd: str | None = None,
        model_hint: str | None = None,
        on_event: EventCallback | None = None,
    ) -> RunResult: ...


ClientFactory = Callable[[Settings], AbstractAsyncContextManager[RunClient]]


def build_server(settings: Settings, client: RunClient) -> MCPServer:
    """Create the MCP server with `super_agent_run` bound to `client`."""
    server: MCPServer = MCPServer(
        name=SERVER_NAME,
        title="superpool",
        instructions=INSTRUCTIONS,
        version=_package_version(),
    )
    server.add_tool(
        _make_tool(client, _path_argument_types(settings)),
        name=TOOL_NAME,
        title="Run an agent in the superpool",
        description=TOOL_DESCRIPTION,
        annotations=ToolAnnotations(
            title="Run an agent in the superpool",
            read_only_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        ),
    )
    return server


def _make_tool(
    client: RunClient, path_types: tuple[object, object]
) -> Callable[..., Awaitable[CallToolResult]]:
    prompt_file_type, caller_cwd_type = path_types

    async def super_agent_run(
        task: TaskArg,
        prompt_text: PromptTextArg = None,
        prompt_file: prompt_file_type = None,  # type: ignore[valid-type]
        adapter: AdapterArg = "claude",
        cwd_mode: CwdModeArg = "isolated",
        caller_cwd: caller_cwd_type = None,  # type: ignore[valid-type]
        model_hint: ModelHintArg = None,
        *,
        ctx: Context,
    ) -> Annotated[CallToolResult, RunToolResult]:
        logger.info(
            "run requested task=%s adapter=%s cwd_mode=%s", task, adapter, cwd_mode
        )
        try:
            result = await client.run(
                task,
                prompt_text=prompt_text,
                prompt_file=prompt_file,
                adapter=adapter,
                cwd_mode=cwd_mode,
                caller_cwd=caller_cwd,
                model_hint=model_hint,
                on_event=_progress_reporter(ctx),
            )
        except asyncio.CancelledError:
            # The MCP client cancelled the request, or the proxy is stopping.
            logger.info("run request cancelled task=%s", task)
            raise
        logger.info(
            "run finished run_id=%s task=%s status=%s error=%s",
            result.run_id,
            task,
            result.status,
            result.error.code if result.error else "-",
        )
        return to_call_tool_result(result)

    return super_agent_run


def _path_argument_types(settings: Settings) -> tuple[object, object]:
    """Build the prompt_file and caller_cwd types, described with this pool's roots."""
    if settings.workspace_roots:
        roots = ", ".join(settings.workspace_roots)
        rule = f"It must resolve under one of the workspace roots: {roots}."
    else:
        rule = "This pool has no workspace roots, so any value is rejected."
    prompt_file = Annotated[
        str | None,
        Field(
            description=(
                "Absolute path of a file that contains the prompt, instead of "
                f"prompt_text. {rule}"
            )
        ),
    ]
    caller_cwd = Annotated[
        str | None,
        Field(
            description=(
                "Absolute path of the directory the agent works in, required with "
                f"cwd_mode 'caller'. {rule}"
            )
        ),
    ]
    return prompt_file, caller_cwd


def _progress_reporter(ctx: Context) -> EventCallback:
    """Forward a run's events as MCP progress notifications.

    The MCP client gets them only when its request carried a progress token.
    They let it tell a long run from a hung one.
    """
    counter = itertools.count(1)

    async def report(event: RunEvent) -> None:
        if event.kind == "result":
            return
        message = event.message or f"run {event.kind}"
        try:
            await ctx.report_progress(next(counter), None, message)
        except Exception as exc:
            # Progress is advisory: a client that went away must not fail the run.
            logger.debug(
                "progress notification failed run_id=%s error=%r", event.run_id, exc
            )

    return report


async def serve(
    settings: Settings,
    transport: str,
    host: str | None = None,
    port: int | None = None,
    *,
    client_factory: ClientFactory | None = None,
    on_listening: ListeningCallback | None = None,
) -> None:
    """Serve `super_agent_run` over stdio or streamable HTTP.

    The server runs until it is cancelled, and over stdio also until stdin
    closes. Either way the pool client is closed before this returns.

    Args:
        settings: Pool settings; `proxy_host` and `proxy_port` are the HTTP
            defaults.
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
    """
    if transport not in TRANSPORTS:
        raise ValueError(
            f"transport {transport!r} is unknown: use {' or '.join(TRANSPORTS)}"
        )
    factory = client_factory or _open_pool_client
    async with factory(settings) as client:
        server = build_server(settings, client)
        if transport == "stdio":
            logger.info("proxy serving transport=stdio")
            # NOTE: mcp 2.3.0 reads stdin in a worker thread that cancellation
            # cannot interrupt, so a cancelled stdio server returns only after
            # stdin delivers a line or EOF.
            await server.run_stdio_async()
            return
        await serve_http(
            server,
            host or settings.proxy_host,
            settings.proxy_port if port is None else port,
            on_listening=on_listening,
        )


def _open_pool_client(settings: Settings) -> AbstractAsyncContextManager[RunClient]:
    return PoolClient(settings, name="superpool-proxy")


def _package_version() -> str:
    try:
        return metadata.version("superagent-pool")
    except metadata.PackageNotFoundError:
        return ""
