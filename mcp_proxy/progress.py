"""MCP progress notifications for one super_agent_run call.

The runner sends a progress event at least every 10 s, but an MCP client
that resets its read timeout on progress may use a shorter timeout than
that. So besides relaying the run's events, a ticker sends "still ..."
whenever `interval_s` passed without a notification. Progress is advisory: a
notification that cannot be sent is dropped, and the SDK drops all of them
when the client's request carried no progress token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from bus.backoff import attempt_run_id
from bus.wire import RunEvent, RunResult

logger = logging.getLogger(__name__)

# Maximum gap between two notifications. A client that restarts a 5 s read
# timeout on progress gets one before it gives up, with room for a slow
# event loop.
PROGRESS_INTERVAL_S = 3.0


class ProgressContext(Protocol):
    """The part of the SDK's tool Context that sends progress."""

    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None: ...


class RunProgress:
    """Send the progress notifications of one run: its events and a ticker.

        async with RunProgress(ctx, run_id) as progress:
            result = await client.run(..., run_id=run_id, on_event=progress.on_event)
            await progress.finished(result)

    `run_id` follows the attempts of `bus.backoff.run_with_backoff` when
    `on_busy` is passed to it.
    """

    def __init__(
        self,
        ctx: ProgressContext,
        run_id: str,
        *,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id = run_id
        self._first_run_id = run_id
        self._ctx = ctx
        self._interval_s = interval_s
        self._clock = clock
        self._phase = "queued"
        self._count = 0
        self._started = self._last_sent = clock()
        # Keeps the progress values in the order the client receives them.
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunProgress:
        self._ticker = asyncio.create_task(self._tick())
        await self.send(f"submitted run_id={self.run_id}; waiting for a runner")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)

    async def send(self, message: str) -> None:
        """Send one notification now and restart the ticker's interval."""
        async with self._lock:
            self._count += 1
            self._last_sent = self._clock()
            try:
                await self._ctx.report_progress(self._count, None, message)
            except Exception as exc:
                # A client that went away must not fail the run.
                logger.debug(
                    "progress notification failed run_id=%s error=%r", self.run_id, exc
                )

    async def on_event(self, event: RunEvent) -> None:
        """Relay a runner's event; pass this as `on_event` to `PoolClient.run`."""
        if event.kind == "started":
            self._phase = f"running on runner {event.runner_id}"
            await self.send(f"started on runner {event.runner_id} run_id={self.run_id}")
        elif event.kind == "progress":
            await self.send(event.message or f"running run_id={self.run_id}")

    async def on_busy(self, attempt: int, result: RunResult, delay_s: float) -> None:
        """Report a POOL_BUSY attempt; pass this as `on_busy` to `run_with_backoff`."""
        self.run_id = attempt_run_id(self._first_run_id, attempt + 1)
        self._phase = "waiting for a free slot"
        await self.send(
            f"all slots busy (attempt {attempt}); trying again in {delay_s:.1f} s"
        )

    async def finished(self, result: RunResult) -> None:
        """Send the last notification, with the run's final status."""
        await self.send(f"finished status={result.status} run_id={result.run_id}")

    async def _tick(self) -> None:
        while True:
            due = self._last_sent + self._interval_s
            await asyncio.sleep(max(0.0, due - self._clock()))
            if self._clock() - self._last_sent >= self._interval_s:
                elapsed = self._clock() - self._started
                await self.send(
                    f"still {self._phase}, {elapsed:.0f} s elapsed run_id={self.run_id}"
                )
