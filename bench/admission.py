"""Admission decisions: POOL_BUSY with every slot taken, and POOL_UNREACHABLE.

POOL_UNREACHABLE is timed in three cases:

- no live runner;
- nats-server stopped: the client knows that it is disconnected and returns
  at once;
- nats-server frozen by SIGSTOP: the connection looks alive, so the client
  waits for one `request_timeout`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.harness import RunnerProcesses, Server, pool_settings, provision_pool
from bench.pool_runs import ECHO, check_ok, submit_until_admitted
from bench.stats import Summary, summarize
from bus.client import PoolClient
from bus.wire import Status

# Runs that hold every slot while POOL_BUSY is timed; they are cancelled after.
HOLD_HINT = "delay=120"
# Bound for the pool to reach a state that a measurement needs.
SETTLE_S = 30.0

T = TypeVar("T")


@dataclass(frozen=True)
class Unreachable:
    no_runner: Summary
    disconnected: Summary
    frozen: Summary
    request_timeout: float


async def _expect(client: PoolClient, status: Status) -> None:
    result = await client.run("bench", **ECHO)  # type: ignore[arg-type]
    if result.status is not status:
        raise RuntimeError(f"expected {status}, got {result.status}: {result.error}")


async def _time_status(
    client: PoolClient, status: Status, count: int, warmup: int
) -> Summary:
    for _ in range(warmup):
        await _expect(client, status)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await _expect(client, status)
        samples.append(time.perf_counter() - started)
    return summarize(samples)


async def busy_latency(
    client: PoolClient, capacity: int, count: int, warmup: int
) -> Summary:
    """Time POOL_BUSY results while `capacity` long runs keep every slot busy."""
    run_ids = [f"hold-{index}-{os.getpid()}" for index in range(capacity)]
    holders = [
        asyncio.create_task(
            client.run(
                "bench",
                prompt_text="hold",
                adapter="echo",
                model_hint=HOLD_HINT,
                run_id=run_id,
            )
        )
        for run_id in run_ids
    ]
    try:
        await _wait(lambda: _in_stream(client), lambda count: count == capacity)
        return await _time_status(client, Status.POOL_BUSY, count, warmup)
    finally:
        for run_id in run_ids:
            await client.cancel(run_id)
        await asyncio.gather(*holders, return_exceptions=True)


async def _in_stream(client: PoolClient) -> int:
    return (await client.status()).in_stream


async def _wait(
    read: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    limit_s: float = SETTLE_S,
) -> None:
    deadline = time.monotonic() + limit_s
    while not accept(await read()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the pool did not settle within {limit_s:g} s")
        await asyncio.sleep(0.02)


async def unreachable(
    url: str, work_dir: Path, count: int, frozen_count: int
) -> Unreachable:
    """Time POOL_UNREACHABLE with no runner, a stopped and a frozen nats-server."""
    empty = pool_settings(url, work_dir, "empty")
    await provision_pool(empty)
    async with PoolClient(empty, name="bench-empty") as client:
        no_runner = await _time_status(
            client, Status.POOL_UNREACHABLE, count, max(1, count // 10)
        )
    server = Server(work_dir / "own-nats")
    own_url = await server.start()
    settings = pool_settings(own_url, work_dir, "own")
    await provision_pool(settings)
    runner = RunnerProcesses(settings, 1, 1, work_dir / "own-logs")
    await runner.start()
    try:
        async with PoolClient(settings, name="bench-unreachable") as client:
            frozen = await _frozen(server, client, frozen_count)
            await runner.stop()
            await server.stop()
            await _wait(_connected(client), lambda connected: not connected)
            disconnected = await _time_status(
                client, Status.POOL_UNREACHABLE, count, max(1, count // 10)
            )
    finally:
        await runner.stop()
        await server.stop()
    return Unreachable(no_runner, disconnected, frozen, settings.request_timeout)


def _connected(client: PoolClient) -> Callable[[], Awaitable[bool]]:
    async def read() -> bool:
        return client.connected

    return read


async def _frozen(server: Server, client: PoolClient, count: int) -> Summary:
    pid = server.embedded.pid
    assert pid is not None
    samples = []
    for _ in range(count):
        # The run that timed out last time may still hold the one slot until
        # its runner drops it as withdrawn.
        warm, _ = await submit_until_admitted(client, None)
        check_ok(warm)
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.perf_counter()
            result = await client.run("bench", **ECHO)  # type: ignore[arg-type]
            samples.append(time.perf_counter() - started)
        finally:
            os.kill(pid, signal.SIGCONT)
        if result.status is not Status.POOL_UNREACHABLE:
            raise RuntimeError(f"a frozen server gave {result.status}")
    return summarize(samples)
