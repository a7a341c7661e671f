"""Pool runs through PoolClient: sequential latency and concurrent throughput."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from bench.stats import Summary, median, summarize, time_calls
from bus.client import PoolClient
from bus.errors import PoolError
from bus.wire import RunResult, Status

ECHO = {"adapter": "echo", "prompt_text": "ping"}
# A run that waits longer than this for a slot means the pool is broken.
SUBMIT_DEADLINE_S = 60.0
# A submitter that got POOL_BUSY waits a random time up to this long before
# it tries again. bus/backoff.py waits at least the result's retry_after_s
# (0.5 s), which suits runs of seconds but would leave the slot of a 100 ms
# run idle for five run times. Measured here, 5 ms moved more runs than 2 ms
# (less CPU spent on retries) and kept the 100 ms runs' slots as busy.
RETRY_MAX_S = 0.005


@dataclass(frozen=True)
class Throughput:
    """Runs per second of each round, and what the submitters saw."""

    rates: tuple[float, ...]
    runs: int
    busy_retries: int
    failures: int

    @property
    def rate(self) -> float:
        return median(self.rates)


def check_ok(result: RunResult) -> None:
    if result.status is not Status.OK:
        message = result.error.message if result.error else ""
        raise PoolError(
            f"benchmark run {result.run_id} ended {result.status}: {message}"
        )


async def sequential(client: PoolClient, count: int, warmup: int) -> Summary:
    """Time `count` echo runs one after another, from submit to result."""

    async def one() -> None:
        check_ok(await client.run("bench", **ECHO))  # type: ignore[arg-type]

    return summarize(await time_calls(one, count, warmup))


async def submit_until_admitted(
    client: PoolClient, model_hint: str | None, wait_for_slot: bool = False
) -> tuple[RunResult, int]:
    """Run one echo run, retrying POOL_BUSY; return the result and the attempts.

    With `wait_for_slot`, the client itself waits for a slot
    (`PoolClient.run(wait_for_slot_s=...)`) instead of the caller retrying.
    """
    deadline = time.monotonic() + SUBMIT_DEADLINE_S
    wait_s = SUBMIT_DEADLINE_S if wait_for_slot else 0.0
    attempts = 0
    while True:
        attempts += 1
        result = await client.run(
            "bench",
            model_hint=model_hint,
            wait_for_slot_s=wait_s,
            **ECHO,  # type: ignore[arg-type]
        )
        if result.status is not Status.POOL_BUSY or time.monotonic() > deadline:
            return result, attempts
        await asyncio.sleep(random.uniform(0, RETRY_MAX_S))


@dataclass
class _Round:
    left: int
    retries: int = 0
    failures: int = 0


async def _submitter(
    client: PoolClient, state: _Round, model_hint: str | None, wait_for_slot: bool
) -> None:
    while state.left > 0:
        state.left -= 1
        result, attempts = await submit_until_admitted(
            client, model_hint, wait_for_slot
        )
        state.retries += attempts - 1
        state.failures += result.status is not Status.OK


async def throughput(
    client: PoolClient,
    *,
    runs: int,
    submitters: int,
    rounds: int,
    model_hint: str | None = None,
    wait_for_slot: bool = False,
) -> Throughput:
    """Push `runs` echo runs through `submitters` concurrent callers, `rounds` times.

    The callers retry POOL_BUSY themselves, or with `wait_for_slot` let the
    client wait for a slot.
    """
    rates = []
    retries = failures = 0
    for _ in range(rounds):
        state = _Round(runs)
        started = time.perf_counter()
        await asyncio.gather(
            *(
                _submitter(client, state, model_hint, wait_for_slot)
                for _ in range(submitters)
            )
        )
        rates.append(runs / (time.perf_counter() - started))
        retries += state.retries
        failures += state.failures
    return Throughput(tuple(rates), runs * rounds, retries, failures)
