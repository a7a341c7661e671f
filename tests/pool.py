"""Helpers that start in-process runners against the test's nats-server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from bus.client import PoolClient
from bus.settings import Settings, child_environ
from runner.runner import Runner

# Every wait in the tests ends after this long.
WAIT_LIMIT_S = 10.0


@asynccontextmanager
async def running_pool(
    settings: Settings, runners: int = 3, slots: int = 3
) -> AsyncIterator[list[Runner]]:
    """Start `runners` runners and wait until the registry lists all of them."""
    async with AsyncExitStack() as stack:
        started = [
            await stack.enter_async_context(
                Runner(settings, runner_id=f"runner-{index}", slots=slots)
            )
            for index in range(runners)
        ]
        async with PoolClient(settings) as client:
            await wait_until(
                lambda: client.registry.live_capacity(),
                lambda total: total == runners * slots,
            )
        yield started


async def wait_until(
    read: Callable[[], object],
    check: Callable[[object], bool],
    limit: float = WAIT_LIMIT_S,
) -> object:
    """Poll `read()` until `check` accepts its value; fail after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        value = read()
        if asyncio.iscoroutine(value):
            value = await value
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"condition not met within {limit} s; last value {value!r}"
            )
        await asyncio.sleep(0.02)


class RunnerProcess:
    """A `superpool runner` child process, for tests that kill or freeze runners."""

    def __init__(
        self, settings: Settings, runner_id: str, log_dir: Path, slots: int = 3
    ):
        self.settings = settings
        self.runner_id = runner_id
        self.slots = slots
        self.log_path = log_dir / f"{runner_id}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "superpool.cli",
                    "--log-level",
                    "INFO",
                    "runner",
                    "--runner-id",
                    self.runner_id,
                    "--slots",
                    str(self.slots),
                ],
                env=child_environ(self.settings),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = WAIT_LIMIT_S) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(WAIT_LIMIT_S * 4)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""
