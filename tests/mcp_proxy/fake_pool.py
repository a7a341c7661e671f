"""A stand-in for bus.client.PoolClient with canned results chosen by task.

The proxy's unit tests use it in process, and the stdio and HTTP subprocess
tests load it with `--client-factory tests.mcp_proxy.fake_pool:FakePoolClient`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bus.settings import Settings
from bus.wire import RunError, RunEvent, RunResult, Status, Usage

RUN_ID = "run-1"
BUSY_MESSAGE = "every slot is busy"
INVALID_MESSAGE = "caller_cwd '/etc' is outside the workspace roots"
UNREACHABLE_MESSAGE = "could not connect to NATS at nats://127.0.0.1:1"
FAILED_MESSAGE = "echo adapter failed on request (model_hint 'fail')"
PROGRESS_MESSAGE = "echo waiting 1 s"

# Task label -> the result that a run of that task gets. Any other task is OK.
CANNED: dict[str, RunResult] = {
    "busy": RunResult(
        run_id=RUN_ID,
        status=Status.POOL_BUSY,
        error=RunError(code="POOL_BUSY", message=BUSY_MESSAGE),
        retry_after_s=0.5,
    ),
    "invalid": RunResult(
        run_id=RUN_ID,
        status=Status.INVALID_REQUEST,
        error=RunError(code="PATH_REJECTED", message=INVALID_MESSAGE),
    ),
    "unreachable": RunResult(
        run_id=RUN_ID,
        status=Status.POOL_UNREACHABLE,
        error=RunError(code="POOL_UNREACHABLE", message=UNREACHABLE_MESSAGE),
    ),
    "failed": RunResult(
        run_id=RUN_ID,
        status=Status.RUN_FAILED,
        adapter="echo",
        error=RunError(code="ADAPTER_ERROR", message=FAILED_MESSAGE),
    ),
    "timeout": RunResult(run_id=RUN_ID, status=Status.RUN_TIMEOUT),
    "cancelled": RunResult(run_id=RUN_ID, status=Status.CANCELLED),
}


def ok_result(prompt_text: str | None, adapter: str) -> RunResult:
    """Return the result of a successful run of `prompt_text`."""
    return RunResult(
        run_id=RUN_ID,
        status=Status.OK,
        output=f"echo: {prompt_text}",
        adapter=adapter,
        model="echo",
        usage=Usage(input_tokens=3, output_tokens=4),
        cost_usd=0.25,
        notes=("model_hint 'opus' is unknown; used echo",),
    )


class FakePoolClient:
    """A pool client that returns canned results and records every call to `run`."""

    def __init__(self, settings: Settings | None = None, **_: Any) -> None:
        self.settings = settings
        self.calls: list[dict[str, Any]] = []
        self.entered = False
        self.exited = False
        # Set when a run of the task "hang" starts, and when it is cancelled.
        self.hanging = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __aenter__(self) -> FakePoolClient:
        self.entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.exited = True

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
        on_event: Any = None,
    ) -> RunResult:
        self.calls.append(
            {
                "task": task,
                "prompt_text": prompt_text,
                "prompt_file": prompt_file,
                "adapter": adapter,
                "cwd_mode": cwd_mode,
                "caller_cwd": caller_cwd,
                "model_hint": model_hint,
                "on_event": on_event,
            }
        )
        if task in CANNED:
            return CANNED[task]
        if task == "hang":
            return await self._hang()
        if on_event is not None:
            await on_event(RunEvent(kind="started", run_id=RUN_ID, runner_id="r1"))
            await on_event(
                RunEvent(kind="progress", run_id=RUN_ID, message=PROGRESS_MESSAGE)
            )
        return ok_result(prompt_text, adapter)

    async def _hang(self) -> RunResult:
        self.hanging.set()
        try:
            await asyncio.Future()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("a hanging run never finishes")
