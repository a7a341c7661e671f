"""The claude adapter: answer a prompt with the Anthropic Messages API.

The anthropic SDK is imported on the first run, not with this module, so a
runner that never calls Claude does not load it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from bus.errors import AdapterError
from bus.wire import Usage
from runner.adapters.base import AdapterOutput, AdapterRun, redact

if TYPE_CHECKING:
    from anthropic import APIStatusError, AsyncAnthropic
    from anthropic.types import Message, MessageParam

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
    """Send each run's prompt to Claude as one user message."""

    name = "claude"

    def __init__(self, *, max_retries: int = 2) -> None:
        """Set how often the SDK retries a 408, 409, 429, 5xx or connection failure."""
        self.max_retries = max_retries

    async def run(self, run: AdapterRun) -> AdapterOutput:
        """Call the Messages API with `run.model` and return the response text.

        The whole call, retries included, ends after the request's `timeout_s`
        or else `settings.default_timeout_s`.

        Raises:
            AdapterError: the API key is missing or the API call failed. Each
                copy of the API key in the message is replaced by [redacted].
            TimeoutError: the call did not finish in time.
        """
        api_key = _api_key()
        timeout_s = run.request.timeout_s or run.settings.default_timeout_s
        import anthropic

        client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=run.settings.anthropic_base_url or None,
            max_retries=self.max_retries,
        )
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with client:
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._converse(client, run, deadline)
            except (TimeoutError, anthropic.APITimeoutError):
                raise TimeoutError(
                    f"claude call did not finish within {timeout_s:g} s"
                ) from None
            except anthropic.APIStatusError as exc:
                message = _describe_status_error(exc)
            except anthropic.APIConnectionError as exc:
                message = f"claude API at {client.base_url} could not be reached"
                if exc.__cause__ is not None:
                    message += f": {type(exc.__cause__).__name__}: {exc.__cause__}"
            except anthropic.APIError as exc:
                message = f"claude API call failed: {exc.message}"
        # Chaining would keep the SDK error, whose text may contain the key.
        raise AdapterError(self.name, redact(message, api_key)) from None

    async def _converse(
        self, client: AsyncAnthropic, run: AdapterRun, deadline: float
    ) -> AdapterOutput:
        messages: list[MessageParam] = [{"role": "user", "content": run.prompt}]
        message = await self._create_message(client, run, messages, deadline)
        # TODO: run tools here while message.stop_reason is "tool_use": append
        # the assistant turn and the tool results to `messages`, send them again
        # and add up the usage of every turn.
        return _output(message, run)

    async def _create_message(
        self,
        client: AsyncAnthropic,
        run: AdapterRun,
        messages: list[MessageParam],
        deadline: float,
    ) -> Message:
        await run.progress(f"calling {run.model}")
        # The SDK would limit each attempt to 600 s, so allow the time left.
        # NOTE: an explicit timeout also skips the SDK's check that requires
        # streaming when max_tokens suggests a response longer than 10 minutes.
        remaining_s = max(deadline - asyncio.get_running_loop().time(), 0.001)
        message = await client.messages.create(
            model=run.model,
            max_tokens=run.settings.max_output_tokens,
            messages=messages,
            timeout=remaining_s,
        )
        logger.info(
            "claude message done run_id=%s model=%s stop_reason=%s "
            "input_tokens=%d output_tokens=%d",
            run.request.run_id,
            message.model,
            message.stop_reason,
            message.usage.input_tokens,
            message.usage.output_tokens,
        )
        return message


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


def _output(message: Message, run: AdapterRun) -> AdapterOutput:
    text = "".join(block.text for block in message.content if block.type == "text")
    return AdapterOutput(
        output=text,
        model=message.model or run.model,
        usage=Usage(
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
        ),
        notes=_stop_notes(message.stop_reason, run),
    )


def _stop_notes(stop_reason: str | None, run: AdapterRun) -> tuple[str, ...]:
    if stop_reason == "max_tokens":
        return (
            f"the answer was cut off at max_output_tokens="
            f"{run.settings.max_output_tokens}",
        )
    if stop_reason == "refusal":
        return ("claude declined to answer (stop_reason 'refusal')",)
    return ()


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
