"""Structured results of the proxy's tools and their conversion from pool types."""

from __future__ import annotations

from typing import Literal

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from bus.wire import RunResult, Status
from registry.registry import PoolStatus

# Status of super_agent_result when the pool has no final result for the id.
NO_RESULT: Literal["NO_RESULT"] = "NO_RESULT"

# Advice to the calling agent for each status but OK. The text content carries
# it, so that an agent that reads only the text still gets it.
NEXT_STEPS: dict[str, str] = {
    Status.POOL_BUSY: "Back off with jitter and call again.",
    Status.POOL_UNREACHABLE: (
        "Tell the user or do the work inline; do not retry in a loop."
    ),
    Status.INVALID_REQUEST: "Fix the arguments named in the message and call again.",
    Status.RUN_FAILED: "The agent or its model provider failed; read the message.",
    Status.RUN_TIMEOUT: (
        "The run exceeded its timeout. Read a late result with super_agent_result, "
        "or split the task."
    ),
    Status.CANCELLED: "The run was cancelled before it finished.",
    NO_RESULT: (
        "Call super_agent_result again later; a run that is still queued or "
        "running has no result yet."
    ),
}

# Used when a non-OK result carries no error message of its own.
DEFAULT_MESSAGES: dict[Status, str] = {
    Status.POOL_BUSY: "every slot is busy",
    Status.POOL_UNREACHABLE: "the pool could not be reached",
    Status.INVALID_REQUEST: "the request was rejected",
    Status.RUN_FAILED: "the run failed",
    Status.RUN_TIMEOUT: "the run timed out",
    Status.CANCELLED: "the run was cancelled",
}

STATUS_DESCRIPTION = (
    "OK, or why there is no answer: POOL_BUSY, POOL_UNREACHABLE, "
    "INVALID_REQUEST, RUN_FAILED, RUN_TIMEOUT or CANCELLED."
)


class TokenUsage(BaseModel):
    """Token counts that the model provider reported for the run."""

    input_tokens: int = Field(default=0, description="Prompt tokens.")
    output_tokens: int = Field(default=0, description="Generated tokens.")


class RunErrorInfo(BaseModel):
    """The reason a call did not end with status OK."""

    code: str = Field(description="Machine-readable error code.")
    message: str = Field(description="What failed and what to do about it.")


class RunToolResult(BaseModel):
    """Structured content of `super_agent_run` and `super_agent_cancel`."""

    status: Status = Field(description=STATUS_DESCRIPTION)
    output: str = Field(default="", description="The agent's final output.")
    run_id: str = Field(
        default="", description="Pool id of the run, for super_agent_result and logs."
    )
    adapter: str = Field(default="", description="Adapter that ran the prompt.")
    model: str = Field(default="", description="Model that produced the output.")
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float = Field(default=0.0, description="Estimated cost in US dollars.")
    error: RunErrorInfo | None = Field(
        default=None, description="Set for every status but OK."
    )
    notes: list[str] = Field(
        default_factory=list,
        description="Things the caller should know, such as an unused model hint.",
    )
    retry_after_s: float | None = Field(
        default=None,
        description="Set with POOL_BUSY: seconds to wait before the first retry.",
    )


class RunLookupResult(RunToolResult):
    """Structured content of `super_agent_result`."""

    status: Status | Literal["NO_RESULT"] = Field(  # type: ignore[assignment]
        description=(
            f"The run's final status ({STATUS_DESCRIPTION}), or NO_RESULT: the pool "
            "has no result for this run_id yet. The run is queued or running, or "
            "the run_id is unknown, or its result has expired."
        )
    )


class RunnerInfo(BaseModel):
    """One live runner, as its last heartbeat describes it."""

    runner_id: str = Field(description="Runner id, such as 'runner-0'.")
    state: str = Field(description="'ready', or 'draining' while it stops.")
    slots: int = Field(description="Runs it can run at once.")
    busy: int = Field(description="Runs it is running now.")
    runs: list[str] = Field(default_factory=list, description="run_id of each run.")
    version: str = Field(default="", description="superpool version of the runner.")
    host: str = Field(default="", description="Host name of the runner.")


class PoolStatusResult(BaseModel):
    """Structured content of `super_agent_status`."""

    status: Status = Field(
        description="OK, or POOL_UNREACHABLE when the pool did not respond."
    )
    slots_total: int = Field(default=0, description="Slots of ready runners.")
    slots_busy: int = Field(default=0, description="Slots running a run now.")
    slots_free: int = Field(
        default=0, description="Slots free now; 0 means super_agent_run gets POOL_BUSY."
    )
    queued: int = Field(default=0, description="Admitted runs no runner started yet.")
    runners: list[RunnerInfo] = Field(default_factory=list)
    error: RunErrorInfo | None = Field(
        default=None, description="Set with POOL_UNREACHABLE."
    )


def to_tool_result(result: RunResult) -> RunToolResult:
    """Convert a pool RunResult into the tools' structured content."""
    error = None
    if result.error is not None:
        error = RunErrorInfo(code=result.error.code, message=result.error.message)
    elif result.status is not Status.OK:
        error = RunErrorInfo(
            code=str(result.status), message=DEFAULT_MESSAGES[result.status]
        )
    return RunToolResult(
        status=result.status,
        output=result.output,
        run_id=result.run_id,
        adapter=result.adapter,
        model=result.model,
        usage=TokenUsage(
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
        ),
        cost_usd=result.cost_usd,
        error=error,
        notes=list(result.notes),
        retry_after_s=result.retry_after_s,
    )


def summarize(content: RunToolResult) -> str:
    """Build the short text content that goes with the structured content."""
    if content.status == Status.OK:
        lines = [f"OK run_id={content.run_id} model={content.model or '-'}"]
    else:
        message = content.error.message if content.error else ""
        header = f"{content.status}: {message}"
        if content.retry_after_s is not None:
            header += f"; retry after {content.retry_after_s:g} s"
        lines = [header, NEXT_STEPS[content.status]]
        if content.run_id:
            lines.append(f"run_id={content.run_id}")
    lines.extend(f"note: {note}" for note in content.notes)
    if content.output:
        lines.extend(["", content.output])
    return "\n".join(lines)


def to_call_tool_result(
    result: RunResult, *, is_error: bool | None = None
) -> CallToolResult:
    """Build the MCP tool result of a run.

    Args:
        result: The pool's result.
        is_error: The tool result's isError; by default set for every status
            but OK.
    """
    content = to_tool_result(result)
    return _call_tool_result(
        content,
        summarize(content),
        content.status is not Status.OK if is_error is None else is_error,
    )


def no_result(run_id: str) -> CallToolResult:
    """Build the super_agent_result tool result for a run_id without a final result."""
    content = RunLookupResult(
        status=NO_RESULT,
        run_id=run_id,
        error=RunErrorInfo(
            code=NO_RESULT,
            message=f"no result yet or unknown run_id {run_id!r}",
        ),
    )
    return _call_tool_result(content, summarize(content), True)


def to_status_result(status: PoolStatus) -> CallToolResult:
    """Build the super_agent_status tool result from the registry's pool status."""
    content = PoolStatusResult(
        status=Status.OK,
        slots_total=status.slots_total,
        slots_busy=status.slots_busy,
        slots_free=status.slots_free,
        queued=status.queued,
        runners=[
            RunnerInfo(
                runner_id=runner.runner_id,
                state=runner.state,
                slots=runner.slots,
                busy=runner.busy,
                runs=list(runner.runs),
                version=runner.version,
                host=runner.host,
            )
            for runner in status.runners
        ],
    )
    return _call_tool_result(content, summarize_status(content), False)


def unreachable_status(message: str) -> CallToolResult:
    """Build the super_agent_status tool result for a pool that did not respond."""
    content = PoolStatusResult(
        status=Status.POOL_UNREACHABLE,
        error=RunErrorInfo(code=Status.POOL_UNREACHABLE, message=message),
    )
    return _call_tool_result(content, summarize_status(content), True)


def summarize_status(content: PoolStatusResult) -> str:
    """Build the text content of super_agent_status."""
    if content.status is not Status.OK:
        message = content.error.message if content.error else ""
        return f"{content.status}: {message}\n{NEXT_STEPS[content.status]}"
    lines = [
        f"OK: {content.slots_free} of {content.slots_total} slots free, "
        f"{content.slots_busy} busy, {content.queued} queued, "
        f"{len(content.runners)} runners"
    ]
    if not content.runners:
        lines.append("No runner is live, so super_agent_run returns POOL_UNREACHABLE.")
    lines.extend(
        f"{runner.runner_id} {runner.state} {runner.busy}/{runner.slots} busy"
        for runner in content.runners
    )
    return "\n".join(lines)


def _call_tool_result(content: BaseModel, text: str, is_error: bool) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=content.model_dump(mode="json"),
        is_error=is_error,
    )
