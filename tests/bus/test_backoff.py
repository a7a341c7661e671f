"""Exponential backoff with full jitter on POOL_BUSY: the schedule and its use."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from bus.backoff import attempt_run_id, backoff_delay, run_with_backoff
from bus.client import PoolClient
from bus.errors import ConfigError
from bus.settings import Settings
from bus.wire import RunResult, Status
from tests.pool import child_environ, running_pool, wait_until

# `superpool run` of an echo run, as a user would start it.
SUPERPOOL_RUN = [sys.executable, "-m", "superpool.cli", "run", "hi", "--task", "t"]
SUPERPOOL_RUN += ["--adapter", "echo"]


class FakeClock:
    """Monotonic time that moves only when a test sleeps or advances it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        # Awaited after a sleep of that number (1 for the first), if present.
        self.after_sleep: dict[int, Callable[[], Awaitable[object]]] = {}

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        hook = self.after_sleep.get(len(self.sleeps))
        if hook is not None:
            await hook()


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def sequence(*values: float) -> Callable[[], float]:
    numbers: Iterator[float] = iter(values)
    return lambda: next(numbers)


class ScriptedClient:
    """A pool client whose runs return the given statuses in order."""

    def __init__(
        self, *statuses: Status, retry_after_s: float | None = None, clock: FakeClock
    ) -> None:
        self.statuses = list(statuses)
        self.retry_after_s = retry_after_s
        self.clock = clock
        self.calls: list[dict[str, Any]] = []

    async def run(self, task: str, **arguments: Any) -> RunResult:
        self.calls.append({"task": task, **arguments})
        # Each admission attempt takes 10 ms of the pool's time.
        self.clock.now += 0.01
        status = self.statuses.pop(0)
        busy = status is Status.POOL_BUSY
        return RunResult(
            run_id=arguments["run_id"],
            status=status,
            retry_after_s=self.retry_after_s if busy else None,
        )


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (400, 8.0)],
)
def test_delay_caps(attempt: int, expected: float) -> None:
    delay = backoff_delay(attempt, base_s=0.5, max_s=8.0, rng=constant(1.0))
    assert delay == expected


def test_delay_full_jitter() -> None:
    delays = [
        backoff_delay(3, base_s=0.5, max_s=8.0, rng=constant(fraction))
        for fraction in (0.0, 0.25, 0.999)
    ]
    assert delays == [0.0, 0.5, 1.998]


def test_delay_floor() -> None:
    assert (
        backoff_delay(1, base_s=1.0, max_s=8.0, rng=constant(0.1), floor_s=0.5) == 0.5
    )
    assert (
        backoff_delay(4, base_s=1.0, max_s=8.0, rng=constant(0.5), floor_s=0.5) == 4.0
    )
    assert (
        backoff_delay(1, base_s=1.0, max_s=2.0, rng=constant(0.5), floor_s=9.0) == 9.0
    )


def test_attempt_run_ids() -> None:
    assert attempt_run_id("abc", 1) == "abc"
    assert attempt_run_id("abc", 2) == "abc-2"
    long_id = "x" * 128
    assert attempt_run_id(long_id, 12) == "x" * 125 + "-12"


async def test_retries_until_ok() -> None:
    clock = FakeClock()
    client = ScriptedClient(
        Status.POOL_BUSY, Status.POOL_BUSY, Status.POOL_BUSY, Status.OK, clock=clock
    )
    result = await run_with_backoff(
        client,
        "task-a",
        deadline_s=30,
        base_s=1.0,
        max_s=3.0,
        clock=clock,
        sleep=clock.sleep,
        rng=sequence(0.5, 0.25, 0.9),
        run_id="r1",
        prompt_text="hi",
        adapter="echo",
    )
    assert result.status == Status.OK
    assert result.notes == ()
    assert clock.sleeps == pytest.approx([0.5, 0.5, 2.7])
    assert [call["run_id"] for call in client.calls] == ["r1", "r1-2", "r1-3", "r1-4"]
    assert client.calls[0] == {
        "task": "task-a",
        "run_id": "r1",
        "prompt_text": "hi",
        "adapter": "echo",
    }


@pytest.mark.parametrize(
    "status", [status for status in Status if status is not Status.POOL_BUSY]
)
async def test_no_retry_on_other_status(status: Status) -> None:
    clock = FakeClock()
    client = ScriptedClient(status, clock=clock)
    result = await run_with_backoff(
        client, "t", deadline_s=30, clock=clock, sleep=clock.sleep, rng=constant(0.5)
    )
    assert result.status == status
    assert len(client.calls) == 1
    assert clock.sleeps == []


async def test_zero_deadline_tries_once() -> None:
    clock = FakeClock()
    client = ScriptedClient(Status.POOL_BUSY, clock=clock)
    result = await run_with_backoff(
        client, "t", deadline_s=0, clock=clock, sleep=clock.sleep, rng=constant(0.5)
    )
    assert result.status == Status.POOL_BUSY
    assert result.notes == ()
    assert clock.sleeps == []


async def test_deadline_cuts_last_wait() -> None:
    clock = FakeClock()
    client = ScriptedClient(*[Status.POOL_BUSY] * 3, clock=clock)
    result = await run_with_backoff(
        client,
        "t",
        deadline_s=1.0,
        base_s=1.0,
        max_s=8.0,
        clock=clock,
        sleep=clock.sleep,
        rng=constant(0.9),
    )
    assert result.status == Status.POOL_BUSY
    # 0.9 s, then 1.8 s cut to what is left of the second (0.01 s per attempt).
    assert clock.sleeps == pytest.approx([0.9, 0.08])
    assert len(client.calls) == 3
    assert result.notes == ("POOL_BUSY on all 3 attempts in 1.0 s",)


async def test_retry_after_is_floor() -> None:
    clock = FakeClock()
    client = ScriptedClient(
        Status.POOL_BUSY, Status.POOL_BUSY, Status.OK, retry_after_s=2.0, clock=clock
    )
    await run_with_backoff(
        client,
        "t",
        deadline_s=30,
        base_s=0.5,
        max_s=8.0,
        clock=clock,
        sleep=clock.sleep,
        rng=sequence(0.1, 0.9),
    )
    assert clock.sleeps == [2.0, 2.0]


async def test_busy_callback() -> None:
    clock = FakeClock()
    client = ScriptedClient(Status.POOL_BUSY, Status.OK, clock=clock)
    seen: list[tuple[int, str, float]] = []

    async def on_busy(attempt: int, result: RunResult, delay_s: float) -> None:
        seen.append((attempt, result.run_id, delay_s))

    await run_with_backoff(
        client,
        "t",
        deadline_s=30,
        base_s=1.0,
        clock=clock,
        sleep=clock.sleep,
        rng=constant(0.5),
        on_busy=on_busy,
        run_id="r",
    )
    assert seen == [(1, "r", 0.5)]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"deadline_s": -1}, "deadline_s must be 0 or more seconds, got -1"),
        ({"deadline_s": 1, "base_s": 0}, "base_s must be greater than 0, got 0"),
        ({"deadline_s": 1, "max_s": -2}, "max_s must be greater than 0, got -2"),
    ],
)
async def test_rejects_parameters(arguments: dict[str, Any], message: str) -> None:
    client = ScriptedClient(Status.OK, clock=FakeClock())
    with pytest.raises(ConfigError, match=message):
        await run_with_backoff(client, "t", **arguments)
    assert client.calls == []


async def test_pool_slot_frees(settings: Settings, nc: object) -> None:
    clock = FakeClock()
    async with (
        running_pool(settings, runners=1, slots=1),
        PoolClient(settings) as client,
    ):
        holder = asyncio.create_task(
            client.run("hold", prompt_text="x", adapter="echo", model_hint="delay=3")
        )
        await wait_until(client.status, lambda status: status.in_stream == 1)

        async def slot_frees() -> None:
            # The held slot frees after about 3 s of real time; the first
            # three attempts run at once, while the holder still runs.
            await holder
            await wait_until(client.status, lambda status: status.in_stream == 0)

        clock.after_sleep[3] = slot_frees
        result = await run_with_backoff(
            client,
            "hello",
            deadline_s=30,
            base_s=1.0,
            max_s=4.0,
            clock=clock,
            sleep=clock.sleep,
            rng=constant(0.75),
            run_id="backoff",
            prompt_text="hi",
            adapter="echo",
        )
    assert holder.result().status == Status.OK
    assert result.status == Status.OK
    assert result.run_id == "backoff-4"
    assert clock.sleeps == [0.75, 1.5, 3.0]


async def test_cli_retry_waits(settings: Settings, nc: object) -> None:
    async with (
        running_pool(settings, runners=1, slots=1),
        PoolClient(settings) as client,
    ):
        holder = asyncio.create_task(
            client.run("hold", prompt_text="x", adapter="echo", model_hint="delay=2")
        )
        await wait_until(client.status, lambda status: status.in_stream == 1)
        done = await asyncio.to_thread(
            subprocess.run,
            [*SUPERPOOL_RUN, "--retry", "--retry-deadline", "30"],
            env=child_environ(settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        await holder
    assert done.returncode == 0, done.stderr
    assert "status:  OK" in done.stdout
    assert "superpool run: POOL_BUSY on attempt 1; retrying in " in done.stderr
