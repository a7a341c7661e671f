"""The gemini adapter: a one-shot agent on the Gemini generateContent API.

The model gets the prompt and the file tools as function declarations. The
SDK's automatic function calling is off, so the adapter runs each
`functionCall` itself through the tools. It sends a `functionResponse` part
back in the next user turn, up to `max_turns` model calls. The google-genai
SDK is imported on the first run, not with this module, so a runner that
never calls Gemini does not load it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
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
from runner.tools import Toolbox, gemini_declarations

if TYPE_CHECKING:
    from google.genai.client import AsyncClient
    from google.genai.errors import APIError
    from google.genai.types import (
        Candidate,
        Content,
        FunctionCall,
        GenerateContentConfig,
        GenerateContentResponse,
        GenerateContentResponseUsageMetadata,
        Part,
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
        api_key, key_env = _api_key()
        import httpx2
        from google import genai
        from google.genai import types

        # No retry_options: the SDK does not retry, and call_with_retries
        # logs each retry and keeps every wait inside the run's timeout.
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
        client = genai.Client(api_key=api_key, enterprise=False, http_options=options)
        deadline = asyncio.get_running_loop().time() + run.timeout_s
        # The client opens a sync and an async HTTP pool, and both need closing.
        with client:
            async with client.aio as aio:
                conversation = _Conversation(aio, run, api_key, key_env, deadline)
                try:
                    async with asyncio.timeout_at(deadline):
                        return await conversation.converse()
                except (TimeoutError, httpx2.TimeoutException):
                    raise TimeoutError(
                        f"gemini run did not finish within {run.timeout_s:g} s"
                    ) from None
                except AdapterError as exc:
                    message = str(exc)
        # Chaining would keep the SDK error, whose text may contain the key.
        raise AdapterError(self.name, redact(message, api_key)) from None


class _Conversation:
    """The contents of one run and the loop that extends them."""

    def __init__(
        self,
        aio: AsyncClient,
        run: AdapterRun,
        api_key: str,
        key_env: str,
        deadline: float,
    ) -> None:
        from google.genai import types

        self.aio = aio
        self.run = run
        self.api_key = api_key
        self.key_env = key_env
        self.deadline = deadline
        self.toolbox = Toolbox.for_run(run)
        self.contents: list[Content] = [
            types.Content(role="user", parts=[types.Part(text=run.prompt)])
        ]
        self.config = _config(run, self.toolbox)

    async def converse(self) -> AdapterOutput:
        run = self.run
        for turn in range(1, run.settings.max_turns + 1):
            response = await call_with_retries(
                functools.partial(self._generate, turn),
                classify=self._classify,
                run=run,
                adapter="gemini",
                deadline=self.deadline,
            )
            usage = _usage(response.usage_metadata)
            run.add_usage(usage.input_tokens, usage.output_tokens)
            candidate = _candidate(response)
            calls = _function_calls(candidate)
            if not calls:
                return _final(response, candidate, run)
            if turn == run.settings.max_turns:
                break
            if candidate.content is not None:
                self.contents.append(candidate.content)
            parts = [await self._function_response(call) for call in calls]
            self.contents.append(_user_turn(parts))
        raise turn_limit_error("gemini", run)

    async def _generate(self, turn: int) -> GenerateContentResponse:
        run = self.run
        await run.progress(f"calling {run.model} (turn {turn})")
        response = await self.aio.models.generate_content(
            model=run.model, contents=self.contents, config=self.config
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

    async def _function_response(self, call: FunctionCall) -> Part:
        from google.genai import types

        name = call.name or ""
        result = await run_tool(self.run, self.toolbox, name, call.args or {})
        # Gemini reads the "output" key as the result and "error" as a failure.
        key = "error" if result.is_error else "output"
        return types.Part(
            function_response=types.FunctionResponse(
                id=call.id, name=name, response={key: result.text}
            )
        )

    def _classify(self, exc: Exception) -> ProviderFailure | None:
        import httpx2
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            return ProviderFailure(
                redact(_describe_api_error(exc, self.key_env), self.api_key),
                retryable=exc.code in RETRYABLE_STATUSES,
                retry_after_s=parse_retry_after(_headers(exc)),
            )
        if isinstance(exc, httpx2.TimeoutException):
            return None
        if isinstance(exc, httpx2.TransportError):
            base_url = self.run.settings.gemini_base_url or "the default endpoint"
            message = (
                f"gemini API at {base_url} could not be reached: "
                f"{type(exc).__name__}: {exc}"
            )
            return ProviderFailure(redact(message, self.api_key), retryable=True)
        return None


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


def _user_turn(parts: list[Part]) -> Content:
    from google.genai import types

    return types.Content(role="user", parts=parts)


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


def _api_key() -> tuple[str, str]:
    """Return the API key and the name of the variable that contains it."""
    for name in API_KEY_ENVS:
        api_key = os.environ.get(name, "").strip()
        if api_key:
            return api_key, name
    raise AdapterError(
        "gemini",
        f"neither {API_KEY_ENVS[0]} nor {API_KEY_ENVS[1]} is set. Set one of them "
        "in the runner's environment to a Gemini API key and restart the runner, "
        "or send the run to adapter 'claude' or 'echo'.",
    )


def _final(
    response: GenerateContentResponse, candidate: Candidate, run: AdapterRun
) -> AdapterOutput:
    """Return the text of the last turn, or raise for a block or an empty reply."""
    finish_reason = _finish_reason(response)
    if finish_reason in BLOCKED_FINISH_REASONS:
        raise AdapterError(
            "gemini", f"gemini blocked the answer (finish_reason {finish_reason})"
        )
    parts = (candidate.content.parts if candidate.content else None) or []
    text = "".join(part.text for part in parts if part.text and not part.thought)
    if not text.strip():
        raise AdapterError(
            "gemini",
            "gemini returned an empty answer "
            f"(finish_reason {finish_reason or 'none'})",
        )
    return AdapterOutput(
        output=text,
        model=response.model_version or run.model,
        usage=Usage(
            input_tokens=run.spent.input_tokens,
            output_tokens=run.spent.output_tokens,
        ),
        notes=_finish_notes(finish_reason, run),
    )


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
        return (
            f"the answer was cut off at max_output_tokens="
            f"{run.settings.max_output_tokens}",
        )
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
