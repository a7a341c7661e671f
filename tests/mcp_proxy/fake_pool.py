"""A stand-in for bus.client.PoolClient with canned results chosen by task or run_id.

The proxy's unit tests use it in process, and the stdio and HTTP subprocess
tests load it with `--client-factory tests.mcp_proxy.fake_pool:FakePoolClient`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from bus.client import new_run_id
from bus.errors import PoolError
from bus.settings import Settings
from bus.wire import RunError, RunEvent, RunnerState, RunResult, Status, Usage
from registry.registry import PoolStatus

BUSY_MESSAGE = "every slot is busy"
INVALID_MESSAGE = "caller_cwd '/etc' is outside the workspace roots"
UNREACHABLE_MESSAGE = "could not connect to NATS at nats://127.0.0.1:1"
FAILED_MESSAGE = "echo adapter failed on request (model_hint 'fail')"
PROGRESS_MESSAGE = "echo waiting 1 s"
# result() and cancel() raise PoolError for this run_id.
UNREACHABLE_ID = "unreachable"
# A run_id whose result is stored before any run.
STORED_ID = "stored-run"
# The task whose first BUSY_ATTEMPTS attempts get POOL_BUSY.
BUSY_THEN_OK = "busy-then-ok"
BUSY_ATTEMPTS = 2
# How long a run of the task "slow" takes.
SLOW_RUN_S = 0.4
RUNNERS = (
    RunnerState(runner_id="runner-0", slots=3, busy=1, runs=("a",), version="0.1.0"),
    RunnerState(runner_id="runner-1", slots=3, busy=0, state="draining"),
)

# Task label -> the result that a run of that task gets. Any other task is OK.
CANNED: dict[str, RunResult] = {
    "busy": RunResult(
        run_id="",
        status=Status.POOL_BUSY,
        error=RunError(code="POOL_BUSY", message=BUSY_MESSAGE),
        retry_after_s=0.5,
    ),
    "invalid": RunResult(
        run_id="",
        status=Status.INVALID_REQUEST,
        error=RunError(code="PATH_REJECTED", message=INVALID_MESSAGE),
    ),
    "unreachable": RunResult(
        run_id="",
        status=Status.POOL_UNREACHABLE,
        error=RunError(code="POOL_UNREACHABLE", message=UNREACHABLE_MESSAGE),
    ),
    "failed": RunResult(
        run_id="",
        status=Status.RUN_FAILED,
        adapter="echo",
        error=RunError(code="ADAPTER_ERROR", message=FAILED_MESSAGE),
    ),
    "timeout": RunResult(run_id="", status=Status.RUN_TIMEOUT),
    "cancelled": RunResult(run_id="", status=Status.CANCELLED),
}


def ok_result(run_id: str, prompt_text: str | None, adapter: str) -> RunResult:
    """Return the result of a successful run of `prompt_text`."""
    return RunResult(
        run_id=run_id,
        status=Status.OK,
        output=f"echo: {prompt_text}",
        adapter=adapter,
        model="echo",
        usage=Usage(input_tokens=3, output_tokens=4),
        cost_usd=0.25,
        notes=("model_hint 'opus' is unknown; used echo",),
    )


class FakePoolClient:
    """A pool client that returns canned results and records every call."""

    def __init__(self, settings: Settings | None = None, **_: Any) -> None:
        self.settings = settings
        self.calls: list[dict[str, Any]] = []
        self.cancels: list[str] = []
        # status() raises PoolError while this is set.
        self.unreachable = False
        self.entered = False
        self.exited = False
        self.results: dict[str, RunResult] = {
            STORED_ID: ok_result(STORED_ID, "stored", "echo")
        }
        # Set when a run of the task "hang" starts, when it is cancelled, and
        # when cancel() is called.
        self.hanging = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.cancel_called = asyncio.Event()

    async def __aenter__(self) -> FakePoolClient:
        self.entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.exited = True

    def new_run_id(self) -> str:
        return new_run_id()

    async def run(self, task: str, **arguments: Any) -> RunResult:
        self.calls.append({"task": task, **arguments})
        run_id = arguments["run_id"]
        on_event = arguments.get("on_event")
        if task in CANNED:
            return _with_id(CANNED[task], run_id)
        if task == BUSY_THEN_OK and self._attempts(task) <= BUSY_ATTEMPTS:
            return _with_id(CANNED["busy"], run_id)
        if task == "hang":
            return await self._hang()
        if on_event is not None:
            await on_event(RunEvent(kind="started", run_id=run_id, runner_id="r1"))
            await on_event(
                RunEvent(kind="progress", run_id=run_id, message=PROGRESS_MESSAGE)
            )
        if task == "slow":
            # Long enough for several ticks of the tests' progress interval.
            await asyncio.sleep(SLOW_RUN_S)
        result = ok_result(run_id, arguments.get("prompt_text"), arguments["adapter"])
        self.results[run_id] = result
        return result

    async def result(self, run_id: str) -> RunResult | None:
        if run_id == UNREACHABLE_ID:
            raise PoolError(UNREACHABLE_MESSAGE)
        return self.results.get(run_id)

    async def cancel(self, run_id: str) -> RunResult:
        self.cancels.append(run_id)
        self.cancel_called.set()
        if run_id == UNREACHABLE_ID:
            raise PoolError(UNREACHABLE_MESSAGE)
        if run_id in self.results:
            return self.results[run_id]
        return RunResult(
            run_id=run_id,
            status=Status.CANCELLED,
            error=RunError(code="CANCELLED", message="cancelled while it ran"),
        )

    async def status(self) -> PoolStatus:
        if self.unreachable:
            raise PoolError(UNREACHABLE_MESSAGE)
        return PoolStatus(
            runners=list(RUNNERS),
            slots_total=3,
            slots_busy=1,
            running=["a"],
            in_stream=2,
        )

    def _attempts(self, task: str) -> int:
        return sum(1 for call in self.calls if call["task"] == task)

    async def _hang(self) -> RunResult:
        self.hanging.set()
        try:
            await asyncio.Future()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("a hanging run never finishes")


def _with_id(result: RunResult, run_id: str) -> RunResult:
    return msgspec.structs.replace(result, run_id=run_id)
