"""One delivered message, from claim to acked result.

A first delivery starts at once and is claimed in the registry at its first
outward step: a model call, a tool call or a progress event (`Lease`), or
`CLAIM_AFTER_S` after it started, whichever comes first. So the claim's round
trip overlaps the adapter's preparation, and a run that ends before it needs
a claim, such as an echo run, stores its claim and its result in one create
of its final record. Nothing leaves the runner before the claim holds. A run
whose claim is rejected is dropped, and the message is handled as the
registry's record requires. A redelivery is claimed before it starts, because
the claim decides whether an earlier runner still owns the run.

The order of the last steps matters. The result is written to the run record
under the lease first, so a runner that lost its lease stops there and
neither acks nor sends a result. The ack comes next. It is not confirmed,
which saves a round trip, but the ack and the result event leave on one
connection in that order, so the server receives the ack first (the client
allows for the server applying it a moment later, see `ACK_SETTLE_S`).
Then the caller's inbox and the results stream get the result. A runner that
dies between the record and the ack leaves a final record, and the runner
that gets the redelivery sends that stored result instead of running the
task again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING

import msgspec
from nats.aio.msg import Msg

from bus.errors import (
    AdapterError,
    ConfigError,
    InvalidRequestError,
    PoolError,
)
from bus.limits import check_prompt_text
from bus.subjects import (
    MSG_ID_HEADER,
    REPLY_HEADER,
    RUN_ID_PATTERN,
    reply_subject,
    task_of_subject,
)
from bus.wire import (
    RunError,
    RunEvent,
    RunRecord,
    RunRequest,
    RunResult,
    Status,
    decode_request,
    encode,
    now,
)
from registry.registry import Claim, LeaseLostError, final_record
from runner.adapters import get_adapter
from runner.adapters.base import AdapterRun
from runner.catalog import catalog_for, with_cost
from runner.routing import resolve_route
from runner.sanitizer import read_prompt_file
from runner.workspace import workspace

if TYPE_CHECKING:
    from runner.runner import Runner

logger = logging.getLogger(__name__)

# A caller hears from a working run at least this often.
PROGRESS_INTERVAL_S = 10.0
# A run that has taken no outward step this long after it started is claimed
# anyway, so the registry shows it and a cancel reaches it.
CLAIM_AFTER_S = 0.05
_RUN_ID_RE = re.compile(RUN_ID_PATTERN)


class ClaimRejected(Exception):
    """The registry rejected a run's claim, so the run must stop without a trace."""

    def __init__(self, claim: Claim) -> None:
        super().__init__(
            f"claim rejected: run {claim.record.run_id} is {claim.outcome}"
        )
        self.claim = claim


class ClaimFailed(Exception):
    """The claim itself failed, as when NATS is down, so the message comes back."""


class Lease:
    """A run's claim in the registry, made once, when the run first needs it.

    `acquire()` claims the run on the first call and returns at once on later
    ones. It raises `ClaimRejected` when the record shows the run final,
    withdrawn or owned by a live runner, and `ClaimFailed` when the claim
    could not be made.
    """

    def __init__(
        self,
        runner: Runner,
        record: RunRecord,
        reply_to: str | None,
        claim: Claim | None = None,
    ) -> None:
        self.runner = runner
        self.record = record
        self.reply_to = reply_to
        self.claim = claim
        # The run's work, which a claim rejected in the background cancels.
        self.work: asyncio.Task[RunResult] | None = None
        self._claiming: asyncio.Task[Claim] | None = None

    @property
    def held(self) -> bool:
        return self.claim is not None and self.claim.outcome == "claimed"

    @property
    def rejected(self) -> bool:
        return self.claim is not None and self.claim.outcome != "claimed"

    @property
    def pending(self) -> bool:
        """True while no claim was made or started."""
        return self.claim is None and self._claiming is None

    def start(self) -> asyncio.Task[Claim]:
        """Start the claim once. A rejection or a failure cancels the run's work."""
        if self._claiming is None:
            self._claiming = asyncio.get_running_loop().create_task(self._claim())
            self._claiming.add_done_callback(self._stop_work)
        return self._claiming

    @property
    def failed(self) -> bool:
        """True when the claim could not be made, as when NATS is down."""
        claiming = self._claiming
        return (
            claiming is not None
            and claiming.done()
            and (claiming.cancelled() or claiming.exception() is not None)
        )

    async def acquire(self) -> None:
        if self.claim is None:
            try:
                await asyncio.shield(self.start())
            except Exception as exc:
                raise ClaimFailed(
                    f"claim of run {self.record.run_id} failed: {exc!r}"
                ) from exc
        assert self.claim is not None
        if self.claim.outcome != "claimed":
            raise ClaimRejected(self.claim)

    async def _claim(self) -> Claim:
        claim = await self.runner.registry.claim(self.record)
        self.claim = claim
        if claim.outcome == "claimed":
            await announce_start(self.runner, self.record, self.reply_to)
        return claim

    def _stop_work(self, claiming: asyncio.Task[Claim]) -> None:
        if (self.failed or self.rejected) and self.work is not None:
            self.work.cancel()


async def announce_start(
    runner: Runner, record: RunRecord, reply_to: str | None
) -> None:
    """Log a claimed run's start and tell its caller."""
    logger.info(
        "run started run_id=%s task=%s adapter=%s runner=%s attempt=%d",
        record.run_id,
        record.task,
        record.adapter,
        runner.runner_id,
        record.attempt,
    )
    await _send_event(runner, reply_to, RunEvent(kind="started", run_id=record.run_id))


async def handle_message(runner: Runner, msg: Msg) -> None:
    """Claim, run and answer one delivered run request."""
    metadata = msg.metadata
    attempt = metadata.num_delivered or 1
    stream_seq = metadata.sequence.stream if metadata.sequence else 0
    reply_to = reply_subject(msg.headers.get(REPLY_HEADER) if msg.headers else None)
    try:
        request = decode_request(msg.data)
    except InvalidRequestError as exc:
        await _reject(runner, msg, _fallback_run_id(msg, stream_seq), reply_to, exc)
        return
    if not request.run_id:
        request = msgspec.structs.replace(
            request, run_id=_fallback_run_id(msg, stream_seq)
        )
    if request.run_id in runner.running:
        # A second message for a run this runner is working on, such as a
        # duplicate publish under another Nats-Msg-Id: leave it until the
        # run is final, when the stored result answers it.
        logger.warning("duplicate message of a running run run_id=%s", request.run_id)
        await msg.nak(delay=runner.settings.ack_wait_s)
        return
    moment = now()
    record = RunRecord(
        run_id=request.run_id,
        state="running",
        task=request.task,
        adapter=request.adapter,
        caller=request.caller,
        runner_id=runner.runner_id,
        attempt=attempt,
        stream_seq=stream_seq,
        claimed_at=moment,
        updated_at=moment,
    )
    if attempt == 1:
        await _execute(runner, msg, request, Lease(runner, record, reply_to), reply_to)
        return
    claim = await runner.registry.claim(record)
    if claim.outcome != "claimed":
        await _handle_rejected(runner, msg, claim, reply_to)
    elif claim.previous is not None and attempt >= runner.settings.max_deliver:
        await _fail_exhausted(runner, msg, request, claim.revision, attempt, reply_to)
    else:
        await announce_start(runner, record, reply_to)
        lease = Lease(runner, record, reply_to, claim)
        await _execute(runner, msg, request, lease, reply_to)


async def _handle_rejected(
    runner: Runner, msg: Msg, claim: Claim, reply_to: str | None
) -> None:
    """Ack, term or nak a message whose run this runner must not run, per its record."""
    run_id = claim.record.run_id
    if claim.outcome == "final" and claim.record.result is not None:
        logger.info("run already final run_id=%s; sending stored result", run_id)
        await msg.ack()
        await publish_result(runner, claim.record.result, reply_to)
    elif claim.outcome in ("withdrawn", "final"):
        logger.info("run withdrawn by its caller run_id=%s; dropped", run_id)
        await msg.term()
        if claim.record.result is not None:
            await publish_result(runner, claim.record.result, reply_to)
    else:
        logger.warning(
            "run held by a live runner run_id=%s owner=%s; leaving it",
            run_id,
            claim.record.runner_id,
        )
        await msg.nak(delay=runner.settings.ack_wait_s)


async def _execute(
    runner: Runner,
    msg: Msg,
    request: RunRequest,
    lease: Lease,
    reply_to: str | None,
) -> None:
    run_id = request.run_id
    runner.running[run_id] = request
    started_at = now()
    runner.run_started[run_id] = started_at
    clock = time.monotonic()
    loop = asyncio.get_running_loop()
    work = loop.create_task(produce_result(runner, request, lease, reply_to))
    lease.work = work
    runner.work[run_id] = work
    keepalive = _KeepAlive(runner, msg, lease)
    timers = [loop.call_later(runner.settings.ack_wait_s / 3, keepalive.start)]
    if lease.pending:
        timers.append(loop.call_later(CLAIM_AFTER_S, lease.start))
    try:
        result = await work
    except ClaimRejected as rejected:
        await _handle_rejected(runner, msg, rejected.claim, reply_to)
        return
    except ClaimFailed as exc:
        raise PoolError(str(exc)) from exc
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        # The work was cancelled by a rejected or failed claim, or by a cancel request.
        if lease.rejected:
            assert lease.claim is not None
            await _handle_rejected(runner, msg, lease.claim, reply_to)
            return
        if lease.failed or run_id not in runner.cancel_requested:
            raise PoolError(
                f"claim of run {run_id} failed; left for redelivery"
            ) from None
        result = _failed(
            RunResult(
                run_id=run_id,
                status=Status.CANCELLED,
                task=request.task,
                adapter=request.adapter,
                caller=request.caller,
            ),
            Status.CANCELLED,
            "cancelled by request",
        )
    finally:
        for timer in timers:
            timer.cancel()
        await keepalive.stop()
        runner.running.pop(run_id, None)
        runner.work.pop(run_id, None)
        runner.cancel_requested.discard(run_id)
        runner.run_started.pop(run_id, None)
        runner.run_models.pop(run_id, None)
    result = msgspec.structs.replace(
        result,
        runner_id=runner.runner_id,
        attempt=lease.record.attempt,
        started_at=started_at,
        finished_at=now(),
    )
    try:
        rejection = await _store_final(runner, lease, result)
    except LeaseLostError as exc:
        runner.counters["lost_leases"] += 1
        runner.metrics.lost_leases.inc()
        logger.warning("%s; result dropped run_id=%s", exc, run_id)
        return
    if rejection is not None:
        await _handle_rejected(runner, msg, rejection, reply_to)
        return
    # NOTE: the server applies acks on a queue of its own, so the caller can
    # get the result before the slot is free. bus/client.py reads the stream
    # again before POOL_BUSY in that case (ACK_SETTLE_S).
    await msg.ack()
    await publish_result(runner, result, reply_to)
    await runner.release_slot()
    runner.counters[result.status.value] += 1
    runner.metrics.observe(result, time.monotonic() - clock)
    logger.info(
        "run finished run_id=%s task=%s adapter=%s model=%s runner=%s status=%s "
        "duration_s=%.3f",
        run_id,
        request.task,
        result.adapter,
        result.model,
        runner.runner_id,
        result.status,
        time.monotonic() - clock,
    )


async def _store_final(runner: Runner, lease: Lease, result: RunResult) -> Claim | None:
    """Store the run's final record; return the claim that rejected the run, if any.

    A run that was never claimed creates its final record, which claims it
    and stores its result in one write. When a record exists already, the
    run is claimed as usual: a record left by a lost runner is taken over.

    Raises:
        LeaseLostError: another runner claimed the run since this one did.
    """
    registry = runner.registry
    if lease.pending:
        record = final_record(lease.record, runner.runner_id, result)
        if await registry.store_first(record):
            return None
    try:
        await lease.acquire()
    except ClaimRejected as rejected:
        return rejected.claim
    except ClaimFailed as exc:
        raise PoolError(str(exc)) from exc
    assert lease.claim is not None
    await registry.finish(
        result.run_id,
        runner.runner_id,
        lease.claim.revision,
        result,
        claimed=lease.record,
    )
    return None


class _KeepAlive:
    """Reset the message's ack timer and tell the caller the run still works.

    It starts one third of `ack_wait_s` into the run, so a short run never
    creates its task.
    """

    def __init__(self, runner: Runner, msg: Msg, lease: Lease) -> None:
        self._runner = runner
        self._msg = msg
        self._lease = lease
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        runner, lease = self._runner, self._lease
        run_id = lease.record.run_id
        interval = runner.settings.ack_wait_s / 3
        last_progress = time.monotonic()
        while True:
            try:
                await self._msg.in_progress()
            except Exception:
                logger.warning("in-progress ack failed run_id=%s", run_id)
            if lease.held and time.monotonic() - last_progress >= PROGRESS_INTERVAL_S:
                last_progress = time.monotonic()
                event = RunEvent(
                    kind="progress", run_id=run_id, message="still working"
                )
                await _send_event(runner, lease.reply_to, event)
            await asyncio.sleep(interval)


async def produce_result(
    runner: Runner, request: RunRequest, lease: Lease, reply_to: str | None
) -> RunResult:
    """Run the adapter in the run's workspace; turn every failure into a status.

    A rejected or failed claim is not a status of the run, so it is re-raised.
    """
    base = RunResult(
        run_id=request.run_id,
        status=Status.OK,
        task=request.task,
        adapter=request.adapter,
        caller=request.caller,
    )
    timeout_s = request.timeout_s or runner.settings.default_timeout_s

    async def progress(message: str) -> None:
        await lease.acquire()
        await _send_event(
            runner,
            reply_to,
            RunEvent(kind="progress", run_id=request.run_id, message=message),
        )

    catalog = runner.catalog
    run: AdapterRun | None = None
    try:
        catalog = catalog_for(runner.settings, runner.catalog)
        route = resolve_route(runner.settings, catalog, request)
        adapter = get_adapter(route.adapter)
        base = msgspec.structs.replace(
            base, adapter=route.adapter, model=route.model, notes=route.notes
        )
        runner.run_models[request.run_id] = route.model
        with workspace(runner.settings, request) as place:
            prompt = read_prompt(runner, request)
            run = AdapterRun(
                request,
                prompt,
                place.path,
                route.model,
                runner.settings,
                progress,
                lease.acquire,
            )
            async with asyncio.timeout(timeout_s):
                output = await adapter.run(run)
    except (ClaimRejected, ClaimFailed):
        raise
    except TimeoutError:
        failed = _failed(
            base, Status.RUN_TIMEOUT, f"the run passed its timeout of {timeout_s:g} s"
        )
    except InvalidRequestError as exc:
        failed = _failed(base, Status.INVALID_REQUEST, str(exc))
    except (AdapterError, ConfigError) as exc:
        failed = _failed(base, Status.RUN_FAILED, str(exc))
    except Exception as exc:
        logger.exception("run failed with an internal error run_id=%s", request.run_id)
        failed = _failed(
            base, Status.RUN_FAILED, f"internal error in the runner: {exc!r}"
        )
    else:
        answered = msgspec.structs.replace(
            base, output=output.output, notes=base.notes + output.notes
        )
        return with_cost(catalog, answered, output.usage, output.model)
    # Tokens spent before a failure or a timeout are billed, so they are kept.
    return with_cost(catalog, failed, run.spent) if run is not None else failed


def read_prompt(runner: Runner, request: RunRequest) -> str:
    """Return the prompt text, reading `prompt_file` through the path check."""
    if request.prompt_text is not None:
        # A direct publisher skips the client's check; the stream only caps
        # the whole message.
        check_prompt_text(runner.settings, request.prompt_text)
        return request.prompt_text
    assert request.prompt_file is not None
    settings = runner.settings
    return read_prompt_file(
        settings.workspace_roots,
        request.prompt_file,
        request.caller_cwd,
        settings.max_prompt_file_bytes,
    )


async def _keep_alive(
    runner: Runner, msg: Msg, request: RunRequest, reply_to: str | None
) -> None:
    """Reset the message's ack timer and tell the caller the run still works."""
    interval = runner.settings.ack_wait_s / 3
    last_progress = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        try:
            await msg.in_progress()
        except Exception:
            logger.warning("in-progress ack failed run_id=%s", request.run_id)
        if time.monotonic() - last_progress >= PROGRESS_INTERVAL_S:
            last_progress = time.monotonic()
            event = RunEvent(
                kind="progress", run_id=request.run_id, message="still working"
            )
            await _send_event(runner, reply_to, event)


async def publish_result(
    runner: Runner, result: RunResult, reply_to: str | None
) -> None:
    """Send the result to the caller's inbox and store it on the results stream.

    Neither waits for the server. The stream's acknowledgement goes to the
    runner's `stored_inbox`, which logs a result that was not stored, so a
    slow acknowledgement keeps no slot busy.
    """
    await _send_event(
        runner, reply_to, RunEvent(kind="result", run_id=result.run_id, result=result)
    )
    try:
        await runner.nc.publish(
            runner.result_subject(result.run_id),
            encode(result),
            reply=f"{runner.stored_inbox}.{result.run_id}",
        )
    except Exception as exc:
        logger.warning(
            "result not stored on the results stream run_id=%s error=%r; the "
            "run record keeps it",
            result.run_id,
            exc,
        )


async def _send_event(runner: Runner, reply_to: str | None, event: RunEvent) -> None:
    if not reply_to:
        return
    event.runner_id = runner.runner_id
    event.at = now()
    try:
        await runner.nc.publish(reply_to, encode(event))
    except Exception:
        logger.warning("event not sent run_id=%s kind=%s", event.run_id, event.kind)


async def _reject(
    runner: Runner,
    msg: Msg,
    run_id: str,
    reply_to: str | None,
    error: InvalidRequestError,
) -> None:
    """Answer an undecodable request with INVALID_REQUEST and remove it for good."""
    result = RunResult(
        run_id=run_id,
        status=Status.INVALID_REQUEST,
        task=task_of_subject(runner.settings, msg.subject),
        runner_id=runner.runner_id,
        error=RunError(code=Status.INVALID_REQUEST, message=str(error)),
        finished_at=now(),
    )
    logger.warning("invalid run request run_id=%s error=%s", run_id, error)
    stored = await runner.registry.finish_unclaimed(result)
    await msg.term()
    runner.counters[Status.INVALID_REQUEST.value] += 1
    if stored:
        await publish_result(runner, result, reply_to)
    else:
        # Another run owns this run_id; never overwrite its stored result.
        await _send_event(
            runner, reply_to, RunEvent(kind="result", run_id=run_id, result=result)
        )


async def _fail_exhausted(
    runner: Runner,
    msg: Msg,
    request: RunRequest,
    revision: int,
    attempt: int,
    reply_to: str | None,
) -> None:
    """End a run whose runners died on every delivery but this last one."""
    lost = attempt - 1
    result = msgspec.structs.replace(
        lost_runner_result(
            request.run_id, request.task, runner.runner_id, attempt, lost
        ),
        adapter=request.adapter,
        caller=request.caller,
    )
    try:
        await runner.registry.finish(request.run_id, runner.runner_id, revision, result)
    except LeaseLostError:
        return
    await msg.term()
    await publish_result(runner, result, reply_to)
    logger.warning(
        "run failed after lost runners run_id=%s lost=%d", request.run_id, lost
    )


def lost_runner_result(
    run_id: str, task: str, runner_id: str, attempt: int, lost: int
) -> RunResult:
    """Return the RUN_FAILED result of a run whose runners died `lost` times."""
    return RunResult(
        run_id=run_id,
        status=Status.RUN_FAILED,
        task=task,
        runner_id=runner_id,
        attempt=attempt,
        finished_at=now(),
        error=RunError(
            code=Status.RUN_FAILED,
            message=f"runner lost {lost} times; the run was not started again",
        ),
    )


def _failed(base: RunResult, status: Status, message: str) -> RunResult:
    return msgspec.structs.replace(
        base, status=status, error=RunError(code=status.value, message=message)
    )


def _fallback_run_id(msg: Msg, stream_seq: int) -> str:
    """Pick a run_id for a request: its payload's, its Nats-Msg-Id, or its sequence."""
    try:
        payload = msgspec.json.decode(msg.data)
    except msgspec.DecodeError:
        payload = None
    if isinstance(payload, dict):
        candidate = payload.get("run_id")
        if isinstance(candidate, str) and _RUN_ID_RE.match(candidate):
            return candidate
    header = msg.headers.get(MSG_ID_HEADER) if msg.headers else None
    if header and _RUN_ID_RE.match(header):
        return header
    return f"seq-{stream_seq}"
