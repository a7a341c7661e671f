"""The registry with 100 simulated runners heartbeating beside the real ones."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bench.pool_runs import sequential
from bench.stats import Summary, summarize, time_calls
from bus.client import PoolClient
from bus.wire import RunnerState, now


@dataclass(frozen=True)
class RegistryFigures:
    status: Summary
    capacity_read: Summary
    run: Summary


@contextlib.asynccontextmanager
async def simulated_runners(
    client: PoolClient, count: int, interval_s: float
) -> AsyncIterator[None]:
    """Heartbeat `count` runners that hold every one of their slots busy.

    They count in live capacity as real runners do, but never pull, so runs
    still go to the real runners.
    """
    registry = client.registry
    states = [
        RunnerState(runner_id=f"sim-{index:03d}", slots=3, busy=3, host="bench")
        for index in range(count)
    ]

    async def beat_once() -> None:
        for state in states:
            state.heartbeat_at = now()
        await asyncio.gather(*(registry.heartbeat(state) for state in states))

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval_s)
            await beat_once()

    await beat_once()
    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(registry.remove_runner(s.runner_id) for s in states))


async def registry_figures(
    client: PoolClient, count: int, warmup: int
) -> RegistryFigures:
    """Time status(), an uncached live-capacity read and a whole run."""
    status = await time_calls(client.status, count, warmup)
    capacity = await time_calls(client.registry.live_capacity, count, warmup)
    run = await sequential(client, count, warmup)
    return RegistryFigures(summarize(status), summarize(capacity), run)
