"""What every adapter receives and returns, and what the model adapters share.

This module contains the run and output types, the tool call, the turn limit
and the retry loop. `runner/adapters/loop.py` builds the claude and gemini
adapters' conversation on them.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from bus.errors import AdapterError
from bus.settings import Settings
from bus.wire import RunRequest, Usage
from runner.tools import Toolbox, ToolResult

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str], Awaitable[None]]
REDACTED = "[redacted]"
# HTTP statuses worth another attempt: timeout, rate limit, server errors
# (Anthropic's 529 "overloaded" included).
RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
# A retry is not started with less than this left before the run's deadline.
MIN_ATTEMPT_S = 0.05

_T = TypeVar("_T")


async def _no_progress(message: str) -> None:
    return None


async def _no_claim() -> None:
    return None


@dataclass
class AdapterRun:
    """One run, as the runner hands it to an adapter.

    `prompt` is the prompt text, already read from `prompt_file` when the
    request named one; `place` is the run's working directory, or what makes
    it on first use (see `workspace`); `model` is the model the catalog
    resolved for the request. `spent` adds up the tokens of every model call,
    so the runner can price a run that fails or times out after some turns.

    `claim` must be awaited before the run's first outward step: a model
    call, a tool call or a progress event. The runner claims the run in the
    registry then, so its claim's round trip overlaps the adapter's own
    preparation, and a run that needs no outward step at all is claimed
    together with its result. It raises when the registry refuses the claim;
    adapters let that exception pass. `call_with_retries` and `progress` claim
    first on their own.
    """

    request: RunRequest
    prompt: str
    place: Path | Callable[[], Path]
    model: str
    settings: Settings
    progress: ProgressCallback = _no_progress
    claim: Callable[[], Awaitable[None]] = _no_claim
    spent: Usage = field(default_factory=Usage)

    @property
    def workspace(self) -> Path:
        """The run's working directory, made on first use."""
        if not isinstance(self.place, Path):
            self.place = self.place()
        return self.place

    @property
    def timeout_s(self) -> float:
        return self.request.timeout_s or self.settings.default_timeout_s

    def add_usage(self, input_tokens: int, output_tokens: int) -> None:
        self.spent.input_tokens += input_tokens
        self.spent.output_tokens += output_tokens


@dataclass
class AdapterOutput:
    output: str
    model: str
    usage: Usage = field(default_factory=Usage)
    notes: tuple[str, ...] = ()


class Adapter(Protocol):
    name: str

    async def run(self, run: AdapterRun) -> AdapterOutput: ...


def redact(text: str, secret: str) -> str:
    """Replace every copy of `secret` in `text`, as provider errors may echo a key."""
    return text.replace(secret, REDACTED) if secret else text


def system_prompt(toolbox: Toolbox) -> str:
    """Return the instructions that tell the model about its one-shot run and tools."""
    access = "read and write" if toolbox.writable else "read (writes are off)"
    return (
        "You run one task and end with a final answer in text. The file tools "
        f"{access} files in the run's working directory; give paths relative "
        "to it. Paths outside it are rejected."
    )


def turn_limit_error(adapter: str, run: AdapterRun) -> AdapterError:
    """Return the error that ends a run whose model still calls tools at max_turns."""
    limit = run.settings.max_turns
    return AdapterError(
        adapter,
        f"the model still called tools after max_turns={limit} turns, so the run "
        "ended without a final answer; split the task or raise "
        "SUPERPOOL_MAX_TURNS",
    )


def cut_off_note(run: AdapterRun) -> str:
    """Return the note for an answer that stopped at max_output_tokens."""
    limit = run.settings.max_output_tokens
    return f"the answer was cut off at max_output_tokens={limit}"


async def run_tool(
    run: AdapterRun, toolbox: Toolbox, name: str, arguments: object
) -> ToolResult:
    """Run one tool call in a thread, so that file access does not block the loop."""
    await run.progress(f"running tool {name}")
    result = await asyncio.to_thread(toolbox.call, name, arguments)
    logger.info(
        "tool call done run_id=%s tool=%s is_error=%s bytes=%d",
        run.request.run_id,
        name,
        result.is_error,
        len(result.text),
    )
    return result


@dataclass(frozen=True)
class ProviderFailure:
    """A failed provider call, described for the caller and for the retry loop."""

    # Description of the failure and of the fix, with the API key redacted.
    message: str
    retryable: bool
    retry_after_s: float | None = None


async def call_with_retries(
    call: Callable[[], Awaitable[_T]],
    *,
    classify: Callable[[Exception], ProviderFailure | None],
    run: AdapterRun,
    adapter: str,
    deadline: float,
) -> _T:
    """Await `call()`, retrying failures that `classify` marks retryable.

    A retry waits the provider's retry-after, else an exponential backoff
    with jitter from `provider_retry_base_s`. A wait longer than
    `provider_retry_max_s`, or than the time left before `deadline` (on the
    event loop's clock), fails the run at once instead, so the run's own
    timeout holds. Each retry is logged at WARNING.

    Raises:
        AdapterError: the failure is not retryable, retries ran out, or the
            wait would pass a bound.
    """
    settings = run.settings
    attempts = max(settings.provider_max_retries, 0) + 1
    for attempt in range(attempts):
        await run.claim()
        try:
            return await call()
        except Exception as exc:
            classified = classify(exc)
            if classified is None:
                raise
            failure = classified
        if not failure.retryable:
            raise AdapterError(adapter, failure.message)
        if attempt == attempts - 1:
            break
        wait = _retry_wait(failure, attempt, settings)
        left = deadline - asyncio.get_running_loop().time()
        if wait > settings.provider_retry_max_s or wait > left - MIN_ATTEMPT_S:
            raise AdapterError(
                adapter,
                f"{failure.message} (not retried: a wait of {wait:.3g} s would pass "
                f"the run's timeout or provider_retry_max_s, {max(left, 0):.3g} s "
                "left)",
            )
        logger.warning(
            "provider call failed; retrying run_id=%s adapter=%s attempt=%d "
            "wait_s=%.3f error=%s",
            run.request.run_id,
            adapter,
            attempt + 1,
            wait,
            failure.message,
        )
        await run.progress(f"retrying {adapter} in {wait:.3g} s")
        await asyncio.sleep(wait)
    attempts = settings.provider_max_retries + 1
    raise AdapterError(
        adapter, f"{failure.message} (gave up after {attempts} attempts)"
    )


def _retry_wait(failure: ProviderFailure, attempt: int, settings: Settings) -> float:
    if failure.retry_after_s is not None:
        return failure.retry_after_s
    backoff = settings.provider_retry_base_s * 2**attempt
    # Jitter in [backoff / 2, backoff] keeps runners that failed together
    # from retrying together.
    return min(backoff, settings.provider_retry_max_s) * random.uniform(0.5, 1.0)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Return the wait that `retry-after-ms` or `retry-after` requests, in seconds.

    `retry-after` may be seconds or an HTTP date; `retry-after-ms` is
    Anthropic's millisecond form. Unparseable values count as absent.
    """
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(float(milliseconds) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)
