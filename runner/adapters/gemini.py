"""The gemini adapter: a one-shot agent on the Gemini generateContent API.

The model gets the prompt and the file tools as function declarations. The
SDK's automatic function calling is off, so the adapter runs each
`functionCall` itself through the tools. It sends a `functionResponse` part
back in the next user turn, up to `max_turns` model calls. The google-genai
SDK is imported on the first run, not with this module, so a runner that
never calls Gemini does not load it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator
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
from runner.tools import Toolbox, ToolResult, gemini_declarations

if TYPE_CHECKING:
    from google.genai import Client
    from google.genai.client import AsyncClient
    from google.genai.errors import APIError
    from google.genai.types import (
        Candidate,
        Content,
        FunctionCall,
        GenerateContentConfig,
        GenerateContentResponse,
        GenerateContentResponseUsageMetadata,
    )

logger = logging.getLogger(__name__)

# Checked in this order, although the SDK on its own prefers GOOGLE_API_KEY.
API_KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
# Finish reasons that mean Gemini withheld its reply.
BLOCKED_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
    }
)

# "{key_env}" is replaced by the variable that supplied the key.
_STATUS_HINTS = {
    400: "Check the request, and that {key_env} contains a valid Gemini API key.",
    401: "Check that {key_env} contains a valid Gemini API key.",
    403: "Check that the key in {key_env} may use this model.",
    404: "Check the model name in the model catalog.",
    429: "The project is rate limited or out of quota, so retry later.",
}


class GeminiAdapter:
    """Run each prompt as a function-calling conversation with Gemini."""

    name = "gemini"

    async def run(self, run: AdapterRun) -> AdapterOutput:
        """Converse with `run.model` until it replies without a function call.

        The whole run, retries and tool calls included, ends after the
        request's `timeout_s` or else `settings.default_timeout_s`.

        Raises:
            AdapterError: no API key is set, the API call failed, Gemini
                blocked the prompt or the answer, the answer was empty, or a
                bound ended the run. Each copy of the API key in the message
                is replaced by [redacted].
            TimeoutError: the run did not finish in time.
        """
        return await _Conversation.converse(run)


class _Conversation(ToolLoop["AsyncClient", "Content", "GenerateContentResponse"]):
    """The contents of one run in the generateContent format."""

    adapter = "gemini"
    key_variables = API_KEY_ENVS
    missing_key_message = (
        f"neither {API_KEY_ENVS[0]} nor {API_KEY_ENVS[1]} is set. Set one of them "
        "in the runner's environment to a Gemini API key and restart the runner, "
        "or send the run to adapter 'claude' or 'echo'."
    )

    @classmethod
    def open_client(
        cls, run: AdapterRun, key: ApiKey
    ) -> AbstractAsyncContextManager[AsyncClient]:
        import httpx2
        from google import genai
        from google.genai import types

        # Without retry_options the SDK does not retry.
        options = types.HttpOptions(
            base_url=run.settings.gemini_base_url or None,
            timeout=math.ceil(run.timeout_s * 1000),
            # google-genai 3.6 switches its async client to aiohttp whenever
            # aiohttp is importable. A transport of our own keeps it on httpx2,
            # so errors and timeouts stay the ones this adapter handles.
            async_client_args={"transport": httpx2.AsyncHTTPTransport()},
        )
        # `enterprise=False` keeps GOOGLE_GENAI_USE_VERTEXAI and
        # GOOGLE_GENAI_USE_ENTERPRISE from switching the client to Vertex AI.
        client = genai.Client(api_key=key.value, enterprise=False, http_options=options)
        return _opened(client)

    @classmethod
    def timeout_errors(cls) -> tuple[type[Exception], ...]:
        import httpx2

        return (httpx2.TimeoutException,)

    @functools.cached_property
    def config(self) -> GenerateContentConfig:
        """The tools and limits, the same in every call of the run."""
        return _config(self.run, self.toolbox)

    def encode_prompt(self) -> Content:
        from google.genai import types

        return types.Content(role="user", parts=[types.Part(text=self.run.prompt)])

    async def send(self, turn: int) -> GenerateContentResponse:
        run = self.run
        response = await self.client.models.generate_content(
            model=run.model, contents=self.messages, config=self.config
        )
        usage = _usage(response.usage_metadata)
        logger.info(
            "gemini response done run_id=%s model=%s turn=%d finish_reason=%s "
            "input_tokens=%d output_tokens=%d",
            run.request.run_id,
            response.model_version or run.model,
            turn,
            _finish_reason(response),
            usage.input_tokens,
            usage.output_tokens,
        )
        return response

    def classify(self, exc: Exception) -> ProviderFailure | None:
        import httpx2
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            return ProviderFailure(
                _describe_api_error(exc, self.key.variable),
                retryable=exc.code in RETRYABLE_STATUSES,
                retry_after_s=parse_retry_after(_headers(exc)),
            )
        if isinstance(exc, httpx2.TransportError):
            base_url = self.run.settings.gemini_base_url or "the default endpoint"
            message = (
                f"gemini API at {base_url} could not be reached: "
                f"{type(exc).__name__}: {exc}"
            )
            return ProviderFailure(message, retryable=True)
        return None

    def usage(self, response: GenerateContentResponse) -> Usage:
        return _usage(response.usage_metadata)

    def tool_calls(self, response: GenerateContentResponse) -> list[ToolCall]:
        return [
            ToolCall(call.id, call.name or "", call.args or {})
            for call in _function_calls(_candidate(response))
        ]

    def answer(self, response: GenerateContentResponse) -> Answer:
        finish_reason = _finish_reason(response)
        if finish_reason in BLOCKED_FINISH_REASONS:
            raise AdapterError(
                "gemini", f"gemini blocked the answer (finish_reason {finish_reason})"
            )
        candidate = _candidate(response)
        parts = (candidate.content.parts if candidate.content else None) or []
        text = "".join(part.text for part in parts if part.text and not part.thought)
        if not text.strip():
            raise AdapterError(
                "gemini",
                "gemini returned an empty answer "
                f"(finish_reason {finish_reason or 'none'})",
            )
        return Answer(
            text,
            model=response.model_version or self.run.model,
            notes=_finish_notes(finish_reason, self.run),
        )

    def encode_results(
        self,
        response: GenerateContentResponse,
        calls: list[ToolCall],
        results: list[ToolResult],
    ) -> list[Content]:
        from google.genai import types

        content = _candidate(response).content
        turns = [] if content is None else [content]
        parts = []
        for call, result in zip(calls, results, strict=True):
            # Gemini reads the "output" key as the result and "error" as a failure.
            key = "error" if result.is_error else "output"
            response_part = types.FunctionResponse(
                id=call.id, name=call.name, response={key: result.text}
            )
            parts.append(types.Part(function_response=response_part))
        return [*turns, types.Content(role="user", parts=parts)]


@contextlib.asynccontextmanager
async def _opened(client: Client) -> AsyncIterator[AsyncClient]:
    """Yield the async client of `client`, then close both its HTTP pools."""
    with client:
        async with client.aio as aio:
            yield aio


def _config(run: AdapterRun, toolbox: Toolbox) -> GenerateContentConfig:
    from google.genai import types

    declarations = [
        types.FunctionDeclaration(**declaration)
        for declaration in gemini_declarations(toolbox.specs)
    ]
    return types.GenerateContentConfig(
        max_output_tokens=run.settings.max_output_tokens,
        system_instruction=system_prompt(toolbox),
        tools=[types.Tool(function_declarations=declarations)],
        # The runner executes every call itself, through the path check.
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )


def _candidate(response: GenerateContentResponse) -> Candidate:
    """Return the first candidate, or raise when Gemini blocked the prompt."""
    if not response.candidates:
        raise AdapterError("gemini", _blocked_message(response))
    return response.candidates[0]


def _function_calls(candidate: Candidate) -> list[FunctionCall]:
    parts = (candidate.content.parts if candidate.content else None) or []
    return [part.function_call for part in parts if part.function_call is not None]


def _headers(exc: APIError) -> Any:
    return getattr(exc.response, "headers", None)


def _usage(metadata: GenerateContentResponseUsageMetadata | None) -> Usage:
    if metadata is None:
        return Usage()
    # Google prices output "including thinking tokens", but
    # candidates_token_count leaves the thinking tokens out.
    output_tokens = (metadata.candidates_token_count or 0) + (
        metadata.thoughts_token_count or 0
    )
    return Usage(
        input_tokens=metadata.prompt_token_count or 0,
        output_tokens=output_tokens,
    )


def _finish_reason(response: GenerateContentResponse) -> str:
    if not response.candidates or response.candidates[0].finish_reason is None:
        return ""
    reason = response.candidates[0].finish_reason
    return str(getattr(reason, "value", reason))


def _finish_notes(finish_reason: str, run: AdapterRun) -> tuple[str, ...]:
    if finish_reason == "MAX_TOKENS":
        return (cut_off_note(run),)
    if finish_reason not in ("", "STOP"):
        return (f"gemini stopped early (finish_reason {finish_reason})",)
    return ()


def _blocked_message(response: GenerateContentResponse) -> str:
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = getattr(feedback.block_reason, "value", feedback.block_reason)
        detail = (
            f" {feedback.block_reason_message}" if feedback.block_reason_message else ""
        )
        return f"gemini blocked the prompt (block_reason {reason}).{detail}"
    return "gemini returned no answer candidates"


def _describe_api_error(exc: APIError, key_env: str) -> str:
    status = f" {exc.status}" if exc.status else ""
    detail = exc.message or "no error message"
    message = f"gemini API returned HTTP {exc.code}{status}: {detail}"
    retry_after = (_headers(exc) or {}).get("retry-after")
    if retry_after:
        message += f" (retry-after {retry_after} s)"
    hint = _STATUS_HINTS.get(exc.code)
    if hint is None and isinstance(exc.code, int) and exc.code >= 500:
        hint = "The provider failed, so retry later."
    if hint:
        message += ". " + hint.format(key_env=key_env)
    return message
