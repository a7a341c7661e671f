"""The claude adapter: a one-shot agent on the Anthropic Messages API.

The model gets the prompt and the file tools. While it stops with
`stop_reason "tool_use"`, the adapter runs each `tool_use` block and sends
the results back as `tool_result` blocks in the next user turn, up to
`max_turns` model calls. The anthropic SDK is imported on the first run, not
with this module, so a runner that never calls Claude does not load it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from typing import TYPE_CHECKING, Any

from bus.errors import AdapterError
from bus.wire import Usage
from runner.adapters.base import (
    RETRYABLE_STATUSES,
    AdapterOutput,
    AdapterRun,
    ProviderFailure,
    call_with_retries,
    parse_retry_after,
    redact,
    run_tool,
    system_prompt,
    turn_limit_error,
)
from runner.tools import Toolbox, anthropic_tools

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
        api_key = _api_key()
        import anthropic

        # The SDK's own retries are off: call_with_retries logs each retry and
        # keeps every wait inside the run's timeout.
        client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=run.settings.anthropic_base_url or None,
            max_retries=0,
        )
        deadline = asyncio.get_running_loop().time() + run.timeout_s
        conversation = _Conversation(client, run, api_key, deadline)
        async with client:
            try:
                async with asyncio.timeout_at(deadline):
                    return await conversation.converse()
            except (TimeoutError, anthropic.APITimeoutError):
                raise TimeoutError(
                    f"claude run did not finish within {run.timeout_s:g} s"
                ) from None
            except AdapterError as exc:
                message = str(exc)
        # Chaining would keep the SDK error, whose text may contain the key.
        raise AdapterError(self.name, redact(message, api_key)) from None


class _Conversation:
    """The messages of one run and the loop that extends them."""

    def __init__(
        self, client: AsyncAnthropic, run: AdapterRun, api_key: str, deadline: float
    ) -> None:
        self.client = client
        self.run = run
        self.api_key = api_key
        self.deadline = deadline
        self.toolbox = Toolbox.for_run(run)
        self.messages: list[MessageParam] = [{"role": "user", "content": run.prompt}]

    async def converse(self) -> AdapterOutput:
        run = self.run
        for turn in range(1, run.settings.max_turns + 1):
            message = await call_with_retries(
                functools.partial(self._create, turn),
                classify=self._classify,
                run=run,
                adapter="claude",
                deadline=self.deadline,
            )
            run.add_usage(message.usage.input_tokens, message.usage.output_tokens)
            calls = [block for block in message.content if block.type == "tool_use"]
            if message.stop_reason != "tool_use" or not calls:
                return _final(message, run)
            if turn == run.settings.max_turns:
                break
            self.messages.append({"role": "assistant", "content": message.content})
            results = [await self._tool_result(block) for block in calls]
            self.messages.append({"role": "user", "content": results})
        raise turn_limit_error("claude", run)

    async def _create(self, turn: int) -> Message:
        run = self.run
        await run.progress(f"calling {run.model} (turn {turn})")
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

    async def _tool_result(self, block: Any) -> ToolResultBlockParam:
        result = await run_tool(self.run, self.toolbox, block.name, block.input)
        return {
            "type": "tool_result",
            "tool_use_id": block.id,
            "content": result.text,
            "is_error": result.is_error,
        }

    def _classify(self, exc: Exception) -> ProviderFailure | None:
        import anthropic

        if isinstance(exc, anthropic.APITimeoutError):
            return None
        if isinstance(exc, anthropic.APIStatusError):
            return ProviderFailure(
                redact(_describe_status_error(exc), self.api_key),
                retryable=exc.status_code in RETRYABLE_STATUSES,
                retry_after_s=parse_retry_after(exc.response.headers),
            )
        if isinstance(exc, anthropic.APIConnectionError):
            message = f"claude API at {self.client.base_url} could not be reached"
            if exc.__cause__ is not None:
                message += f": {type(exc.__cause__).__name__}: {exc.__cause__}"
            return ProviderFailure(redact(message, self.api_key), retryable=True)
        if isinstance(exc, anthropic.APIError):
            message = f"claude API call failed: {exc.message}"
            return ProviderFailure(redact(message, self.api_key), retryable=False)
        return None


def _api_key() -> str:
    api_key = os.environ.get(API_KEY_ENV, "").strip()
    if not api_key:
        raise AdapterError(
            "claude",
            f"{API_KEY_ENV} is not set. Set it in the runner's environment to an "
            "Anthropic API key and restart the runner, or send the run to "
            "adapter 'gemini' or 'echo'.",
        )
    return api_key


def _final(message: Message, run: AdapterRun) -> AdapterOutput:
    """Return the text of the last turn, or raise for a refusal or an empty reply."""
    text = "".join(block.text for block in message.content if block.type == "text")
    if message.stop_reason == "refusal":
        raise AdapterError(
            "claude", "claude declined to answer (stop_reason 'refusal')"
        )
    if not text.strip():
        raise AdapterError(
            "claude",
            f"claude returned an empty answer (stop_reason {message.stop_reason!r})",
        )
    notes: tuple[str, ...] = ()
    if message.stop_reason == "max_tokens":
        notes = (
            f"the answer was cut off at max_output_tokens="
            f"{run.settings.max_output_tokens}",
        )
    return AdapterOutput(
        output=text,
        model=message.model or run.model,
        usage=Usage(
            input_tokens=run.spent.input_tokens,
            output_tokens=run.spent.output_tokens,
        ),
        notes=notes,
    )


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
