"""Retry a run that got POOL_BUSY, with exponential backoff and full jitter.

POOL_BUSY means that every live slot was taken and nothing was queued, so a
later attempt can succeed. Every other status is final for this helper:
POOL_UNREACHABLE in particular is not retried, because retrying against a
pool that does not respond only adds load to it.

The wait before attempt n + 1 is

    max(retry_after_s, rng() * min(max_s, base_s * 2 ** (n - 1)))

("full jitter": uniform between 0 and the capped exponential step), where
`retry_after_s` is the floor the busy result suggested. No wait runs past
the deadline: the last one is cut short so that the final attempt happens
at the deadline. Attempt n >= 2 uses the run_id `<run_id>-<n>`, because a
busy attempt may have left a withdrawn record under its own run_id, and
JetStream drops a publish that repeats a Nats-Msg-Id within its duplicate
window.

    async with PoolClient(settings) as client:
        result = await run_with_backoff(
            client, "summarize", deadline_s=60, prompt_text="...", adapter="echo"
        )
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from bus.errors import ConfigError
from bus.wire import RunEvent, RunResult, Status

logger = logging.getLogger(__name__)

# The first step matches the retry_after_s that PoolClient puts on POOL_BUSY.
DEFAULT_BASE_S = 0.5
# Runs take seconds to minutes. Polling more rarely than this would leave a
# freed slot unused for long, and polling more often only adds admission reads.
DEFAULT_MAX_S = 8.0
# Run ids are at most 128 characters (bus/subjects.py RUN_ID_PATTERN).
MAX_RUN_ID_CHARS = 128

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]
Random = Callable[[], float]
# Called before each wait with the attempt number, its POOL_BUSY result and
# the wait in seconds before the next attempt.
BusyCallback = Callable[[int, RunResult, float], Awaitable[None]]
EventCallback = Callable[[RunEvent], Awaitable[None]]


class SupportsRun(Protocol):
    """Anything with the `run` method of `bus.client.PoolClient`."""

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
        timeout_s: float | None = None,
        run_id: str | None = None,
        caller: str | None = None,
        on_event: EventCallback | None = None,
    ) -> RunResult: ...


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    rng: Random,
    floor_s: float | None = None,
) -> float:
    """Return the wait in seconds after busy attempt `attempt` (1 for the first).

    Args:
        attempt: Number of the attempt that just got POOL_BUSY, from 1.
        base_s: Cap of the first wait.
        max_s: Largest cap of one wait.
        rng: Returns a float in [0, 1), such as `random.random`.
        floor_s: The busy result's `retry_after_s`; the wait is never shorter.
    """
    # Capping the exponent first keeps 2 ** n from overflowing a float.
    exponent = min(attempt - 1, 64)
    cap = min(max_s, base_s * 2.0**exponent)
    return max(floor_s or 0.0, rng() * cap)


def attempt_run_id(run_id: str, attempt: int) -> str:
    """Return the run_id of attempt `attempt` of the run `run_id`."""
    if attempt == 1:
        return run_id
    suffix = f"-{attempt}"
    return run_id[: MAX_RUN_ID_CHARS - len(suffix)] + suffix


async def run_with_backoff(
    client: SupportsRun,
    task: str,
    *,
    deadline_s: float,
    base_s: float = DEFAULT_BASE_S,
    max_s: float = DEFAULT_MAX_S,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    rng: Random = random.random,
    on_busy: BusyCallback | None = None,
    run_id: str | None = None,
    **run_arguments: Any,
) -> RunResult:
    """Run `task` on the pool, retrying on POOL_BUSY until `deadline_s` has passed.

    Args:
        client: The pool client, usually a `bus.client.PoolClient`.
        task: The run's task label.
        deadline_s: Seconds from now after which no attempt starts; 0 makes
            exactly one attempt. It bounds admission only: a run that got a
            slot runs for as long as its own timeout allows.
        base_s: Cap of the first wait.
        max_s: Largest cap of one wait.
        clock: Monotonic time in seconds.
        sleep: Waits the given number of seconds.
        rng: Returns a float in [0, 1).
        on_busy: Awaited before each wait.
        run_id: Run id of the first attempt; when None, a new uuid4 hex
            string, as `bus.client.new_run_id` makes.
        **run_arguments: Passed to `client.run`, such as `prompt_text`,
            `adapter`, `timeout_s` and `on_event`.

    Returns:
        The first result that is not POOL_BUSY, or the last POOL_BUSY result
        with a note that counts the attempts.

    Raises:
        ConfigError: `deadline_s` is negative, or `base_s` or `max_s` is not
            positive.
    """
    _check_parameters(deadline_s, base_s, max_s)
    first_id = run_id or uuid.uuid4().hex
    started = clock()
    deadline = started + deadline_s
    attempt = 1
    last = False
    while True:
        result = await client.run(
            task, run_id=attempt_run_id(first_id, attempt), **run_arguments
        )
        if result.status is not Status.POOL_BUSY or last:
            break
        remaining = deadline - clock()
        if remaining <= 0:
            break
        delay = backoff_delay(
            attempt, base_s=base_s, max_s=max_s, rng=rng, floor_s=result.retry_after_s
        )
        if delay >= remaining:
            # A sleep can end a little early, so the attempt at the deadline
            # is marked as the last one instead of comparing the clock again.
            delay, last = remaining, True
        logger.info(
            "pool busy, retrying run_id=%s task=%s attempt=%d delay_s=%.2f",
            result.run_id,
            task,
            attempt,
            delay,
        )
        if on_busy is not None:
            await on_busy(attempt, result, delay)
        await sleep(delay)
        attempt += 1
    if result.status is Status.POOL_BUSY and attempt > 1:
        note = f"POOL_BUSY on all {attempt} attempts in {clock() - started:.1f} s"
        result = msgspec.structs.replace(result, notes=(*result.notes, note))
    return result


def _check_parameters(deadline_s: float, base_s: float, max_s: float) -> None:
    if deadline_s < 0:
        raise ConfigError(
            "deadline_s", f"deadline_s must be 0 or more seconds, got {deadline_s:g}"
        )
    for name, value in (("base_s", base_s), ("max_s", max_s)):
        if value <= 0:
            raise ConfigError(name, f"{name} must be greater than 0, got {value:g}")
