"""The claude adapter: a one-shot agent on the Anthropic Messages API.

The model gets the prompt and the file tools. While it stops with
`stop_reason "tool_use"`, the adapter runs each `tool_use` block and sends
the results back as `tool_result` blocks in the next user turn, up to
`max_turns` model calls. The anthropic SDK is imported on the first run, not
with this module, so a runner that never calls Claude does not load it.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from bus.errors import AdapterError
from bus.wire import Usage
from runner.adapters.base import (
    RETRYABLE_STATUSES,
    AdapterOutput,
    AdapterRun,
    ProviderFailure,
    cut_off_note,
    parse_retry_after,
    system_prompt,
)
from runner.adapters.loop import Answer, ApiKey, ToolCall, ToolLoop
from runner.tools import ToolResult, anthropic_tools

if TYPE_CHECKING:
    from anthropic import APIStatusError, AsyncAnthropic
    from anthropic.types import Message, MessageParam, ToolResultBlockParam

logger = logging.getLogger(__name__)

API_KEY_ENV = "ANTHROPIC_API_KEY"
# Maximum characters of an unparsed error body to put in an error message.
MAX_BODY_CHARS = 300

_STATUS_HINTS = {
    401: f"Check that {API_KEY_ENV} contains a valid Anthropic API key.",
    403: f"Check that the key in {API_KEY_ENV} may use this model.",
    404: "Check the model name in the model catalog.",
    429: "The account is rate limited, so retry later or lower the load.",
    529: "The API is overloaded, so retry later.",
}


class ClaudeAdapter:
    """Run each prompt as a tool-using conversation with Claude."""

    name = "claude"

    async def run(self, run: AdapterRun) -> AdapterOutput:
        """Converse with `run.model` until it replies without a tool call.

        The whole run, retries and tool calls included, ends after the
        request's `timeout_s` or else `settings.default_timeout_s`.

        Raises:
            AdapterError: the API key is missing, the API call failed, the
                model refused or gave an empty answer, or a bound ended the
                run. Each copy of the API key in the message is replaced by
                [redacted].
            TimeoutError: the run did not finish in time.
        """
        return await _Conversation.converse(run)


class _Conversation(ToolLoop["AsyncAnthropic", "MessageParam", "Message"]):
    """The messages of one run in the Messages API format."""

    adapter = "claude"
    key_variables = (API_KEY_ENV,)
    missing_key_message = (
        f"{API_KEY_ENV} is not set. Set it in the runner's environment to an "
        "Anthropic API key and restart the runner, or send the run to "
        "adapter 'gemini' or 'echo'."
    )

    @classmethod
    def open_client(
        cls, run: AdapterRun, key: ApiKey
    ) -> AbstractAsyncContextManager[AsyncAnthropic]:
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=key.value,
            base_url=run.settings.anthropic_base_url or None,
            max_retries=0,
        )

    @classmethod
    def timeout_errors(cls) -> tuple[type[Exception], ...]:
        import anthropic

        return (anthropic.APITimeoutError,)

    def encode_prompt(self) -> MessageParam:
        return {"role": "user", "content": self.run.prompt}

    async def send(self, turn: int) -> Message:
        run = self.run
        # The SDK would limit each attempt to 600 s, so allow the time left.
        # NOTE: an explicit timeout also skips the SDK's check that requires
        # streaming when max_tokens suggests a response longer than 10 minutes.
        remaining_s = max(self.deadline - asyncio.get_running_loop().time(), 0.001)
        message = await self.client.messages.create(
            model=run.model,
            max_tokens=run.settings.max_output_tokens,
            system=system_prompt(self.toolbox),
            messages=self.messages,
            tools=anthropic_tools(self.toolbox.specs),  # type: ignore[arg-type]
            timeout=remaining_s,
        )
        logger.info(
            "claude message done run_id=%s model=%s turn=%d stop_reason=%s "
            "input_tokens=%d output_tokens=%d",
            run.request.run_id,
            message.model,
            turn,
            message.stop_reason,
            message.usage.input_tokens,
            message.usage.output_tokens,
        )
        return message

    def classify(self, exc: Exception) -> ProviderFailure | None:
        import anthropic

        if isinstance(exc, anthropic.APIStatusError):
            return ProviderFailure(
                _describe_status_error(exc),
                retryable=exc.status_code in RETRYABLE_STATUSES,
                retry_after_s=parse_retry_after(exc.response.headers),
            )
        if isinstance(exc, anthropic.APIConnectionError):
            message = f"claude API at {self.client.base_url} could not be reached"
            if exc.__cause__ is not None:
                message += f": {type(exc.__cause__).__name__}: {exc.__cause__}"
            return ProviderFailure(message, retryable=True)
        if isinstance(exc, anthropic.APIError):
            message = f"claude API call failed: {exc.message}"
            return ProviderFailure(message, retryable=False)
        return None

    def usage(self, message: Message) -> Usage:
        return Usage(
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
        )

    def tool_calls(self, message: Message) -> list[ToolCall]:
        if message.stop_reason != "tool_use":
            return []
        return [
            ToolCall(block.id, block.name, block.input)
            for block in message.content
            if block.type == "tool_use"
        ]

    def answer(self, message: Message) -> Answer:
        text = "".join(block.text for block in message.content if block.type == "text")
        if message.stop_reason == "refusal":
            raise AdapterError(
                "claude", "claude declined to answer (stop_reason 'refusal')"
            )
        if not text.strip():
            raise AdapterError(
                "claude",
                "claude returned an empty answer "
                f"(stop_reason {message.stop_reason!r})",
            )
        notes: tuple[str, ...] = ()
        if message.stop_reason == "max_tokens":
            notes = (cut_off_note(self.run),)
        return Answer(text, model=message.model or self.run.model, notes=notes)

    def encode_results(
        self, message: Message, calls: list[ToolCall], results: list[ToolResult]
    ) -> list[MessageParam]:
        blocks: list[ToolResultBlockParam] = [
            {
                "type": "tool_result",
                # The SDK types ToolUseBlock.id as str, so the "" is never sent.
                "tool_use_id": call.id or "",
                "content": result.text,
                "is_error": result.is_error,
            }
            for call, result in zip(calls, results, strict=True)
        ]
        return [
            {"role": "assistant", "content": message.content},
            {"role": "user", "content": blocks},
        ]


def _describe_status_error(exc: APIStatusError) -> str:
    kind = f" {exc.type}" if exc.type else ""
    detail = exc.api_message or _body_text(exc.body) or exc.message
    message = f"claude API returned HTTP {exc.status_code}{kind}: {detail}"
    retry_after = exc.response.headers.get("retry-after")
    extras = [
        f"request_id {exc.request_id}" if exc.request_id else "",
        f"retry-after {retry_after} s" if retry_after else "",
    ]
    if any(extras):
        message += f" ({', '.join(extra for extra in extras if extra)})"
    hint = _STATUS_HINTS.get(exc.status_code)
    if hint is None and exc.status_code >= 500:
        hint = "The provider failed, so retry later."
    if hint:
        message += f". {hint}"
    return message


def _body_text(body: Any) -> str:
    if isinstance(body, str):
        return body[:MAX_BODY_CHARS]
    return ""
