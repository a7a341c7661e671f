"""The structured result of `super_agent_run` and its conversion from a RunResult."""

from __future__ import annotations

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from bus.wire import RunResult, Status

# Advice to the calling agent for each status but OK. The text content carries
# it, so that an agent that reads only the text still gets it.
NEXT_STEPS: dict[Status, str] = {
    Status.POOL_BUSY: "Back off with jitter and call again.",
    Status.POOL_UNREACHABLE: (
        "Tell the user or do the work inline; do not retry in a loop."
    ),
    Status.INVALID_REQUEST: "Fix the arguments named in the message and call again.",
    Status.RUN_FAILED: "The agent or its model provider failed; read the message.",
    Status.RUN_TIMEOUT: "The run exceeded its timeout; split the task or run inline.",
    Status.CANCELLED: "The run was cancelled before it finished.",
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


class TokenUsage(BaseModel):
    """Token counts that the model provider reported for the run."""

    input_tokens: int = Field(default=0, description="Prompt tokens.")
    output_tokens: int = Field(default=0, description="Generated tokens.")


class RunErrorInfo(BaseModel):
    """The reason a run did not end with status OK."""

    code: str = Field(description="Machine-readable error code.")
    message: str = Field(description="What failed and what to do about it.")


class RunToolResult(BaseModel):
    """Structured content of a `super_agent_run` call."""

    status: Status = Field(
        description=(
            "OK, or why there is no answer: POOL_BUSY, POOL_UNREACHABLE, "
            "INVALID_REQUEST, RUN_FAILED, RUN_TIMEOUT or CANCELLED."
        )
    )
    output: str = Field(default="", description="The agent's final answer.")
    run_id: str = Field(default="", description="Pool id of the run, for logs.")
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


def to_tool_result(result: RunResult) -> RunToolResult:
    """Convert a pool RunResult into the tool's structured content."""
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
    if content.status is Status.OK:
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


def to_call_tool_result(result: RunResult) -> CallToolResult:
    """Build the MCP tool result, with isError set for every status but OK."""
    content = to_tool_result(result)
    return CallToolResult(
        content=[TextContent(type="text", text=summarize(content))],
        structured_content=content.model_dump(mode="json"),
        is_error=content.status is not Status.OK,
    )
