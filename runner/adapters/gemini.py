"""The gemini adapter: answer a prompt with the Gemini generateContent API.

The google-genai SDK is imported on the first run, not with this module, so a
runner that never calls Gemini does not load it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from typing import TYPE_CHECKING

from bus.errors import AdapterError
from bus.wire import Usage
from runner.adapters.base import AdapterOutput, AdapterRun, redact

if TYPE_CHECKING:
    from google.genai.client import AsyncClient
    from google.genai.errors import APIError
    from google.genai.types import (
        Content,
        GenerateContentResponse,
        GenerateContentResponseUsageMetadata,
        HttpRetryOptions,
    )

logger = logging.getLogger(__name__)

# Checked in this order, although the SDK on its own prefers GOOGLE_API_KEY.
API_KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

# "{key_env}" is replaced by the variable that supplied the key.
_STATUS_HINTS = {
    400: "Check the request, and that {key_env} contains a valid Gemini API key.",
    401: "Check that {key_env} contains a valid Gemini API key.",
    403: "Check that the key in {key_env} may use this model.",
    404: "Check the model name in the model catalog.",
    429: "The project is rate limited or out of quota, so retry later.",
}


class GeminiAdapter:
    """Send each run's prompt to Gemini as one user turn."""

    name = "gemini"

    def __init__(self, *, max_retries: int = 2) -> None:
        """Set how often the SDK retries 408, 429, 500, 502-504 and network errors."""
        self.max_retries = max_retries

    async def run(self, run: AdapterRun) -> AdapterOutput:
        """Call generateContent with `run.model` and return the response text.

        The whole call, retries included, ends after the request's `timeout_s`
        or else `settings.default_timeout_s`.

        Raises:
            AdapterError: no API key is set, the prompt was blocked, or the API
                call failed. Each copy of the API key in the message is replaced
                by [redacted].
            TimeoutError: the call did not finish in time.
        """
        api_key, key_env = _api_key()
        timeout_s = run.request.timeout_s or run.settings.default_timeout_s
        import httpx2
        from google import genai
        from google.genai import errors, types

        options = types.HttpOptions(
            base_url=run.settings.gemini_base_url or None,
            timeout=math.ceil(timeout_s * 1000),
            retry_options=self._retry_options(),
        )
        # `enterprise=False` keeps GOOGLE_GENAI_USE_VERTEXAI and
        # GOOGLE_GENAI_USE_ENTERPRISE from switching the client to Vertex AI.
        client = genai.Client(api_key=api_key, enterprise=False, http_options=options)
        # The client opens a sync and an async HTTP pool, and both need closing.
        with client:
            async with client.aio as aio:
                try:
                    async with asyncio.timeout(timeout_s):
                        return await self._converse(aio, run)
                except (TimeoutError, httpx2.TimeoutException):
                    raise TimeoutError(
                        f"gemini call did not finish within {timeout_s:g} s"
                    ) from None
                except errors.APIError as exc:
                    message = _describe_api_error(exc, key_env)
                except httpx2.TransportError as exc:
                    base_url = options.base_url or "the default endpoint"
                    message = (
                        f"gemini API at {base_url} could not be reached: "
                        f"{type(exc).__name__}: {exc}"
                    )
        # Chaining would keep the SDK error, whose text may contain the key.
        raise AdapterError(self.name, redact(message, api_key)) from None

    def _retry_options(self) -> HttpRetryOptions | None:
        from google.genai import types

        if self.max_retries <= 0:
            return None
        return types.HttpRetryOptions(attempts=self.max_retries + 1)

    async def _converse(self, aio: AsyncClient, run: AdapterRun) -> AdapterOutput:
        from google.genai import types

        contents = [types.Content(role="user", parts=[types.Part(text=run.prompt)])]
        response = await self._generate(aio, run, contents)
        # TODO: run tools here while the response contains function calls:
        # append the model turn and the function responses to `contents`, send
        # them again and add up the usage of every turn.
        return _output(response, run)

    async def _generate(
        self,
        aio: AsyncClient,
        run: AdapterRun,
        contents: list[Content],
    ) -> GenerateContentResponse:
        from google.genai import types

        await run.progress(f"calling {run.model}")
        config = types.GenerateContentConfig(
            max_output_tokens=run.settings.max_output_tokens
        )
        response = await aio.models.generate_content(
            model=run.model, contents=contents, config=config
        )
        usage = _usage(response.usage_metadata)
        logger.info(
            "gemini response done run_id=%s model=%s finish_reason=%s "
            "input_tokens=%d output_tokens=%d",
            run.request.run_id,
            response.model_version or run.model,
            _finish_reason(response),
            usage.input_tokens,
            usage.output_tokens,
        )
        return response


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


def _output(response: GenerateContentResponse, run: AdapterRun) -> AdapterOutput:
    if not response.candidates:
        raise AdapterError("gemini", _blocked_message(response))
    content = response.candidates[0].content
    parts = (content.parts if content else None) or []
    text = "".join(part.text for part in parts if part.text and not part.thought)
    return AdapterOutput(
        output=text,
        model=response.model_version or run.model,
        usage=_usage(response.usage_metadata),
        notes=_finish_notes(_finish_reason(response), run),
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
    retry_after = _retry_after(exc)
    if retry_after:
        message += f" (retry-after {retry_after} s)"
    hint = _STATUS_HINTS.get(exc.code)
    if hint is None and isinstance(exc.code, int) and exc.code >= 500:
        hint = "The provider failed, so retry later."
    if hint:
        message += ". " + hint.format(key_env=key_env)
    return message


def _retry_after(exc: APIError) -> str:
    headers = getattr(exc.response, "headers", None)
    if headers is None:
        return ""
    return headers.get("retry-after") or ""
