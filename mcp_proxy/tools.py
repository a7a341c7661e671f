"""The proxy's tools: run, status, result and cancel, bound to one pool client."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from mcp_types import CallToolResult
from nats.errors import Error as NatsError

from bus.backoff import DEFAULT_BASE_S, DEFAULT_MAX_S, SupportsRun, run_with_backoff
from bus.errors import InvalidRequestError, PoolError
from bus.settings import Settings
from bus.subjects import check_run_id
from bus.wire import RunError, RunResult, Status
from mcp_proxy.progress import PROGRESS_INTERVAL_S, ProgressContext, RunProgress
from mcp_proxy.result import (
    no_result,
    to_call_tool_result,
    to_status_result,
    unreachable_status,
)
from registry.registry import PoolStatus

logger = logging.getLogger(__name__)

# The registry lets nats-py errors through, for example when a stream or
# the bucket does not exist yet; the tools report them as POOL_UNREACHABLE.
POOL_ERRORS = (PoolError, TimeoutError, NatsError)
# A run whose MCP request was cancelled is cancelled on the pool within this
# long, or left to finish; PoolClient.cancel waits up to 10 s for the runner.
ABANDON_CANCEL_TIMEOUT_S = 15.0
# Statuses of super_agent_cancel that mean the cancel itself failed.
CANCEL_ERRORS = frozenset({Status.POOL_UNREACHABLE, Status.INVALID_REQUEST})


class RunClient(SupportsRun, Protocol):
    """The part of `bus.client.PoolClient` that the proxy uses."""

    def new_run_id(self) -> str: ...

    async def result(self, run_id: str) -> RunResult | None: ...

    async def cancel(self, run_id: str) -> RunResult: ...

    async def status(self) -> PoolStatus: ...


class PoolTools:
    """The tool implementations, shared by every MCP session of one proxy.

    When an MCP client cancels a super_agent_run call (or its connection
    ends), the run is cancelled on the pool too, so it frees its slot. While
    the proxy stops, it leaves runs alone: their results stay readable with
    super_agent_result, from this proxy or another replica.
    """

    def __init__(
        self,
        settings: Settings,
        client: RunClient,
        *,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
    ) -> None:
        self.settings = settings
        self.client = client
        self.progress_interval_s = progress_interval_s
        self.stopping = False
        self._cancels: set[asyncio.Task[None]] = set()

    def mark_stopping(self) -> None:
        """Stop cancelling the runs of abandoned calls: the proxy is shutting down."""
        self.stopping = True

    async def settle(self) -> None:
        """Wait for the cancels of abandoned runs, before the pool client closes."""
        if self._cancels:
            await asyncio.wait(set(self._cancels), timeout=ABANDON_CANCEL_TIMEOUT_S)

    async def run(
        self,
        ctx: ProgressContext,
        task: str,
        *,
        timeout_s: float | None,
        wait_for_slot_s: float,
        **arguments: Any,
    ) -> CallToolResult:
        """Run one task, with progress, and build the tool result."""
        run_id = self.client.new_run_id()
        logger.info(
            "run requested run_id=%s task=%s adapter=%s cwd_mode=%s wait_for_slot_s=%g",
            run_id,
            task,
            arguments.get("adapter"),
            arguments.get("cwd_mode"),
            wait_for_slot_s,
        )
        rejected = self._check_limits(run_id, task, timeout_s, wait_for_slot_s)
        if rejected is not None:
            return to_call_tool_result(rejected)
        progress = RunProgress(ctx, run_id, interval_s=self.progress_interval_s)
        async with progress:
            try:
                result = await run_with_backoff(
                    self.client,
                    task,
                    deadline_s=wait_for_slot_s,
                    base_s=DEFAULT_BASE_S,
                    max_s=DEFAULT_MAX_S,
                    on_busy=progress.on_busy,
                    run_id=run_id,
                    timeout_s=timeout_s,
                    on_event=progress.on_event,
                    **arguments,
                )
            except asyncio.CancelledError:
                self._abandon(progress.run_id, task)
                raise
            await progress.finished(result)
        logger.info(
            "run finished run_id=%s task=%s status=%s error=%s",
            result.run_id,
            task,
            result.status,
            result.error.code if result.error else "-",
        )
        return to_call_tool_result(result)

    async def status(self) -> CallToolResult:
        """Report the pool's runners and slots."""
        try:
            status = await self.client.status()
        except POOL_ERRORS as exc:
            logger.warning("pool status failed error=%r", exc)
            return unreachable_status(_unreachable_message(self.settings, exc))
        return to_status_result(status)

    async def result(self, run_id: str) -> CallToolResult:
        """Look up the final result of a run."""
        rejected = _check_run_id(run_id)
        if rejected is not None:
            return to_call_tool_result(rejected)
        try:
            result = await self.client.result(run_id)
        except POOL_ERRORS as exc:
            logger.warning("result lookup failed run_id=%s error=%r", run_id, exc)
            return to_call_tool_result(self._unreachable(run_id, exc))
        if result is None:
            return no_result(run_id)
        return to_call_tool_result(result)

    async def cancel(self, run_id: str) -> CallToolResult:
        """Cancel a queued or running run and return its final result."""
        rejected = _check_run_id(run_id)
        if rejected is not None:
            return to_call_tool_result(rejected)
        try:
            result = await self.client.cancel(run_id)
        except POOL_ERRORS as exc:
            logger.warning("cancel failed run_id=%s error=%r", run_id, exc)
            result = self._unreachable(run_id, exc)
        logger.info("cancel requested run_id=%s status=%s", run_id, result.status)
        return to_call_tool_result(result, is_error=result.status in CANCEL_ERRORS)

    def _check_limits(
        self, run_id: str, task: str, timeout_s: float | None, wait_for_slot_s: float
    ) -> RunResult | None:
        settings = self.settings
        message = ""
        if timeout_s is not None and not 0 < timeout_s <= settings.max_timeout_s:
            message = (
                f"timeout_s {timeout_s:g} is invalid: give more than 0 and at most "
                f"the pool's maximum of {settings.max_timeout_s:g} s"
            )
        elif not 0 <= wait_for_slot_s <= settings.proxy_max_wait_for_slot_s:
            message = (
                f"wait_for_slot_s {wait_for_slot_s:g} is invalid: give 0 to "
                f"{settings.proxy_max_wait_for_slot_s:g} s"
            )
        if not message:
            return None
        return RunResult(
            run_id=run_id,
            status=Status.INVALID_REQUEST,
            task=task if isinstance(task, str) else "",
            error=RunError(code=Status.INVALID_REQUEST, message=message),
        )

    def _abandon(self, run_id: str, task: str) -> None:
        if self.stopping:
            logger.info("proxy stopping, run left running run_id=%s", run_id)
            return
        logger.info("call cancelled by the client run_id=%s task=%s", run_id, task)
        cancel = asyncio.create_task(self._cancel_abandoned(run_id))
        self._cancels.add(cancel)
        cancel.add_done_callback(self._cancels.discard)

    async def _cancel_abandoned(self, run_id: str) -> None:
        try:
            result = await asyncio.wait_for(
                self.client.cancel(run_id), ABANDON_CANCEL_TIMEOUT_S
            )
        except POOL_ERRORS as exc:
            logger.warning(
                "abandoned run not cancelled run_id=%s error=%r", run_id, exc
            )
            return
        logger.info(
            "abandoned run cancelled run_id=%s status=%s", run_id, result.status
        )

    def _unreachable(self, run_id: str, exc: BaseException) -> RunResult:
        return RunResult(
            run_id=run_id,
            status=Status.POOL_UNREACHABLE,
            error=RunError(
                code=Status.POOL_UNREACHABLE,
                message=_unreachable_message(self.settings, exc),
            ),
        )


def _check_run_id(run_id: str) -> RunResult | None:
    try:
        check_run_id(run_id)
    except InvalidRequestError as exc:
        return RunResult(
            run_id="",
            status=Status.INVALID_REQUEST,
            error=RunError(code=Status.INVALID_REQUEST, message=str(exc)),
        )
    return None


def _unreachable_message(settings: Settings, exc: BaseException) -> str:
    reason = str(exc) or type(exc).__name__
    return (
        f"the pool at {settings.nats_url} did not respond: {reason}; tell the user "
        "or try again later"
    )
