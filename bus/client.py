"""PoolClient: submit a run and wait for its result, with every wait bounded.

`run()` never raises for a pool condition. It returns a `RunResult` whose
status tells the caller what to do:

    POOL_BUSY         every live slot is taken and nothing was queued
    POOL_UNREACHABLE  NATS, the stream or every runner failed to answer in time
    INVALID_REQUEST   the request broke a rule
    RUN_TIMEOUT       no result within the run's timeout; read it later by run_id

Admission is exact across any number of clients: the client reads the work
queue's message count and last sequence, and publishes with
`Nats-Expected-Last-Sequence` only while the count is below the live
capacity, so a publish that raced another one fails and is retried.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError
from nats.js.kv import KeyValue

from bus.admission import CapacityView, Reservation, StreamView, read_stream_state
from bus.connection import close as close_connection
from bus.connection import connect
from bus.errors import InvalidRequestError, PoolError
from bus.jetstream import PubAck, publish
from bus.limits import check_prompt_text, check_request_size, request_limit
from bus.metrics import ClientMetrics
from bus.provision import KV_STREAM_PREFIX
from bus.settings import Settings
from bus.subjects import (
    EXPECTED_LAST_SEQ_HEADER,
    MSG_ID_HEADER,
    REPLY_HEADER,
    cancel_subject,
    result_subject,
    run_subject,
)
from bus.wire import (
    RunError,
    RunEvent,
    RunRequest,
    RunResult,
    Status,
    decode_event,
    decode_result,
    encode,
    now,
)
from registry.registry import PoolStatus, RunRegistry
from registry.writes import RegistryWriter
from runner.sanitizer import check_request_paths

logger = logging.getLogger(__name__)

EventCallback = Callable[[RunEvent], Awaitable[None]]

# A publish that lost the race for the stream's last sequence reads the
# stream again; past this many losses the pool is contended enough to be busy.
ADMISSION_ATTEMPTS = 25
# First wait suggested to a caller that got POOL_BUSY.
BUSY_RETRY_AFTER_S = 0.5
# Time between connection attempts when NATS was down at start.
CONNECT_RETRY_S = 1.0
# A cancelled run reaches its final result within this long.
CANCEL_SETTLE_S = 10.0
# Time between reads of the results stream while waiting for a result.
RESULT_POLL_S = 0.05
# A resubmitted run whose first submission is still running polls for its
# result this often.
DUPLICATE_POLL_S = 0.25
# Run ids that new_run_id made and no run used yet. Past this many the set
# is cleared, which only costs their runs one registry read each.
MAX_FRESH_RUN_IDS = 10_000
# A run that waits for a slot reads the stream at least this often, for
# slots that the runs of other clients free.
SLOT_POLL_S = 0.05
# A runner acks a run's message just before it sends the result, and the
# server applies acks on a queue of its own. So a stream read right after a
# result may still count that run. Before POOL_BUSY, a client that got a
# result this recently reads the stream again after each of these pauses.
ACK_SETTLE_S = (0.001, 0.002, 0.004)
# JetStream error codes (nats-server).
ERR_MAX_MSGS = 10077
ERR_WRONG_LAST_SEQUENCE = 10071


def new_run_id() -> str:
    return uuid.uuid4().hex


class _Waiter:
    """The events of one run, as they arrive on the client's inbox."""

    def __init__(self, request: RunRequest, on_event: EventCallback | None) -> None:
        self.request = request
        self.queue: asyncio.Queue[RunEvent] = asyncio.Queue()
        self.on_event = on_event


class PoolClient:
    """Submit runs to the pool and wait for their results.

        async with PoolClient(settings) as client:
            result = await client.run("summarize", prompt_text="...", adapter="echo")

    The client can be shared by many concurrent `run()` calls. When NATS is
    down at start, the client keeps trying to connect in the background and
    `run()` returns POOL_UNREACHABLE meanwhile.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        name: str = "superpool-client",
        caller: str = "",
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.name = name
        self.caller = caller
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._registry: RunRegistry | None = None
        self._writer: RegistryWriter | None = None
        self._inbox_prefix = ""
        self._request_limit = request_limit(self.settings)
        self._waiters: dict[str, _Waiter] = {}
        self._connect_task: asyncio.Task[None] | None = None
        self._closed = False
        self.metrics = ClientMetrics()
        # Admission's kept views of live capacity and of the work queue
        # (bus/admission.py explains why both stay exact).
        self._capacity = CapacityView(
            self._read_capacity, self.settings.heartbeat_interval_s
        )
        self._stream = StreamView(self._read_stream_state)
        # Runs waiting for a slot, oldest first. A result of one of this
        # client's runs frees a slot, so it wakes the oldest.
        self._slot_waiters: collections.deque[asyncio.Future[None]] = (
            collections.deque()
        )
        # Withdrawals of runs whose publish timed out, which run on their own
        # so that the caller hears POOL_UNREACHABLE after one request_timeout.
        self._withdrawals: set[asyncio.Task[None]] = set()
        # When the last result event arrived (see ACK_SETTLE_S).
        self._last_result_at = -1.0
        # Run ids from new_run_id() that no run used yet (see run()).
        self._fresh_run_ids: set[str] = set()
        # True once the runs stream was seen; the proxy's /readyz needs it.
        self.provisioned = False

    async def __aenter__(self) -> PoolClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def nc(self) -> NATS | None:
        """The NATS connection, or None before the first successful connect."""
        return self._nc

    @property
    def writer(self) -> RegistryWriter:
        if self._writer is None:
            raise PoolError(f"not connected to NATS at {self.settings.nats_url}")
        return self._writer

    @property
    def registry(self) -> RunRegistry:
        if self._registry is None:
            raise PoolError(f"not connected to NATS at {self.settings.nats_url}")
        return self._registry

    async def connect(self) -> None:
        """Connect to NATS; on failure keep trying in the background."""
        try:
            await self._open()
        except PoolError as exc:
            logger.warning("pool client not connected name=%s error=%s", self.name, exc)
            self._connect_task = asyncio.create_task(self._keep_connecting())

    async def _open(self) -> None:
        nc = await connect(self.settings, name=self.name)
        self._request_limit = request_limit(self.settings, nc.max_payload)
        js = nc.jetstream(timeout=self.settings.request_timeout)
        bucket = self.settings.registry_bucket
        # Bound without a round trip, so a client opened before the bucket
        # exists still works once it is provisioned.
        kv = KeyValue(
            name=bucket,
            stream=KV_STREAM_PREFIX + bucket,
            pre=f"$KV.{bucket}.",
            js=js,
            direct=True,
        )
        self._inbox_prefix = nc.new_inbox()
        await nc.subscribe(self._inbox_prefix + ".*", cb=self._on_event)
        self._nc, self._js = nc, js
        self._registry = RunRegistry(nc, js, kv, self.settings)
        self._writer = RegistryWriter(nc, js, self._registry, self.settings)
        try:
            await js.stream_info(self.settings.runs_stream)
            self.provisioned = True
        except (NotFoundError, TimeoutError, nats.errors.Error):
            logger.warning(
                "stream %s not found; run 'superpool provision'",
                self.settings.runs_stream,
            )

    async def _keep_connecting(self) -> None:
        while not self._closed:
            await asyncio.sleep(CONNECT_RETRY_S)
            try:
                await self._open()
            except PoolError:
                continue
            logger.info(
                "pool client connected name=%s url=%s",
                self.name,
                self.settings.nats_url,
            )
            return

    async def close(self) -> None:
        """Close the connection; runs still waiting return POOL_UNREACHABLE."""
        self._closed = True
        reason = "the client was closed before the run's result arrived"
        for run_id, waiter in self._waiters.items():
            result = _unreachable(waiter.request, reason)
            waiter.queue.put_nowait(
                RunEvent(kind="result", run_id=run_id, result=result)
            )
        for woken in self._slot_waiters:
            if not woken.done():
                woken.set_result(None)
        if self._connect_task is not None:
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
        if self._withdrawals:
            _, late = await asyncio.wait(
                set(self._withdrawals), timeout=self.settings.request_timeout
            )
            for withdrawal in late:
                withdrawal.cancel()
        if self._nc is not None:
            await close_connection(self._nc)
        self._nc = None

    async def _on_event(self, msg: Msg) -> None:
        try:
            event = decode_event(msg.data)
        except msgspec.DecodeError:
            logger.warning("unreadable event on inbox subject=%s", msg.subject)
            return
        waiter = self._waiters.get(event.run_id)
        if waiter is not None:
            waiter.queue.put_nowait(event)
        if event.kind == "result":
            self._last_result_at = time.monotonic()
            self._wake_slot_waiter()

    # Submitting

    def new_run_id(self) -> str:
        """Make a run_id for a later `run()` of this client.

        Such a run_id is new by construction, so `run()` skips its registry
        read for an earlier run of the same run_id.
        """
        if len(self._fresh_run_ids) >= MAX_FRESH_RUN_IDS:
            self._fresh_run_ids.clear()
        run_id = new_run_id()
        self._fresh_run_ids.add(run_id)
        return run_id

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
        on_event: EventCallback | None = None,
        wait_for_slot_s: float = 0.0,
    ) -> RunResult:
        """Run one task on the pool and return its result.

        With `wait_for_slot_s`, a run that finds every slot busy waits up to
        that long for one and returns POOL_BUSY only then. It takes a slot as
        soon as one of this client's runs ends, or within `SLOT_POLL_S` of one
        that another client's run frees.

        A run_id given again within the stream's duplicate window is not run
        twice: the call waits for, or returns, the first run's result.
        """
        explicit = run_id is not None and run_id not in self._fresh_run_ids
        if run_id is None:
            run_id = new_run_id()
        self._fresh_run_ids.discard(run_id)
        try:
            request = self._build_request(
                run_id=run_id,
                task=task,
                prompt_text=prompt_text,
                prompt_file=prompt_file,
                adapter=adapter,
                cwd_mode=cwd_mode,
                caller_cwd=caller_cwd,
                model_hint=model_hint,
                timeout_s=timeout_s,
                caller=self.caller if caller is None else caller,
            )
        except InvalidRequestError as exc:
            return _local_result(run_id, task, Status.INVALID_REQUEST, str(exc))
        if not self.connected:
            return _unreachable(
                request, f"no connection to NATS at {self.settings.nats_url}"
            )
        if not 0 <= wait_for_slot_s <= self.settings.max_timeout_s:
            return _local_result(
                run_id,
                task,
                Status.INVALID_REQUEST,
                f"wait_for_slot_s {wait_for_slot_s:g} is invalid: give 0 to "
                f"{self.settings.max_timeout_s:g} s",
            )
        waiter = _Waiter(request, on_event)
        self._waiters[run_id] = waiter
        try:
            return await self._submit_and_wait(
                request, waiter, explicit, wait_for_slot_s
            )
        except (PoolError, nats.errors.Error) as exc:
            # NATS failed under the run, for example during a cluster leader
            # election; the run may still finish and be read by run_id later.
            logger.warning("run lost its connection run_id=%s error=%r", run_id, exc)
            return _unreachable(request, f"NATS failed during the run ({exc!r})")
        finally:
            self._waiters.pop(run_id, None)

    def _build_request(self, **fields: Any) -> RunRequest:
        settings = self.settings
        if fields["timeout_s"] is None:
            fields["timeout_s"] = settings.default_timeout_s
        if fields["timeout_s"] > settings.max_timeout_s:
            raise InvalidRequestError(
                f"timeout_s {fields['timeout_s']:g} is above the pool's maximum of "
                f"{settings.max_timeout_s:g} s",
                field="timeout_s",
            )
        fields["submitted_at"] = now()
        try:
            request = msgspec.convert(
                {key: value for key, value in fields.items() if value is not None},
                RunRequest,
            )
        except msgspec.ValidationError as exc:
            raise InvalidRequestError(f"invalid run request: {exc}") from None
        check_prompt_text(settings, request.prompt_text)
        check_request_paths(
            settings.workspace_roots, request.caller_cwd, request.prompt_file
        )
        check_request_size(len(encode(request)), self._request_limit)
        return request

    async def _submit_and_wait(
        self,
        request: RunRequest,
        waiter: _Waiter,
        explicit: bool,
        wait_for_slot_s: float,
    ) -> RunResult:
        timeout = (request.timeout_s or self.settings.default_timeout_s) + (
            self.settings.result_margin_s
        )
        msg_id = request.run_id
        if explicit:
            earlier = await self._earlier_run(request)
            if isinstance(earlier, RunResult):
                return earlier
            msg_id = earlier
        submitted = time.monotonic()
        admitted = await self._admit(request, msg_id, submitted + wait_for_slot_s)
        outcome = (
            admitted.status.value if isinstance(admitted, RunResult) else "admitted"
        )
        self.metrics.observe_admission(outcome, time.monotonic() - submitted)
        if isinstance(admitted, RunResult):
            return admitted
        if admitted.duplicate:
            # The stream stored this run_id before, and its runner answers
            # that submission's inbox, so the result comes from the pool.
            return await self._poll_result(request, timeout)
        started = await self._wait_started(request, waiter, admitted.seq)
        if isinstance(started, RunResult):
            return started
        return await self._wait_result(request, waiter, timeout)

    async def _earlier_run(self, request: RunRequest) -> RunResult | str:
        """Return an earlier run's result for this run_id, or the Nats-Msg-Id to use.

        A run withdrawn because no runner took it in time may be submitted
        again. Its message id stays in the stream's duplicate window, which
        would drop the new publish silently, so the new one gets a new id.
        """
        try:
            entry = await self.registry.run_entry(request.run_id)
        except (PoolError, TimeoutError) as exc:
            return _unreachable(request, f"the registry did not respond: {exc}")
        if entry is None:
            return request.run_id
        record, revision = entry
        if record.result is not None:
            return record.result
        if record.state != "withdrawn":
            return request.run_id
        if not await self.writer.reopen(request.run_id, revision):
            return request.run_id
        return f"{request.run_id}.{revision}"

    async def _poll_result(self, request: RunRequest, wait_s: float) -> RunResult:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                stored = await self.result(request.run_id)
            except PoolError:
                stored = None
            if stored is not None:
                return stored
            await asyncio.sleep(DUPLICATE_POLL_S)
        return _timed_out(request, wait_s)

    async def _admit(
        self, request: RunRequest, msg_id: str, slot_deadline: float
    ) -> PubAck | RunResult:
        """Publish the request once a live slot is free; else return why not.

        Past `slot_deadline` (on the monotonic clock) a busy pool is POOL_BUSY.
        """
        data = encode(request)
        # A run that waits for a slot is woken by results, so it needs no
        # settling reads before a POOL_BUSY result.
        settle = slot_deadline <= time.monotonic()
        while True:
            if self._closed:
                return _unreachable(request, "the client was closed")
            try:
                capacity = await self._capacity.get()
            except (PoolError, TimeoutError) as exc:
                return _unreachable(request, f"the registry did not respond: {exc}")
            if capacity == 0:
                return _unreachable(request, "no runner with a fresh heartbeat")
            admitted = await self._admit_once(request, data, msg_id, capacity, settle)
            busy = (
                isinstance(admitted, RunResult) and admitted.status is Status.POOL_BUSY
            )
            if not busy or not await self._wait_for_slot(slot_deadline):
                return admitted

    async def _admit_once(
        self,
        request: RunRequest,
        data: bytes,
        msg_id: str,
        capacity: int,
        settle: bool,
    ) -> PubAck | RunResult:
        """Publish the request if one of `capacity` slots is free now.

        With `settle`, a full stream right after a result is read again
        (`ACK_SETTLE_S`) before the result is POOL_BUSY.
        """
        fresh = False
        losses = 0
        settles = iter(ACK_SETTLE_S if settle else ())
        while losses < ADMISSION_ATTEMPTS:
            reservation = self._stream.reserve(capacity)
            if reservation is not None:
                admitted = await self._publish(request, data, msg_id, reservation)
                if admitted is not None:
                    return admitted
                losses += 1
                fresh = False
                continue
            if fresh and self._stream.known:
                pause = next(settles, None)
                if pause is None or not self._result_just_arrived():
                    return _busy(request, capacity)
                await asyncio.sleep(pause)
                fresh = False
                continue
            failed = await self._refresh_stream(request)
            if failed is not None:
                return failed
            # A view that another caller's lost race invalidated meanwhile
            # counts as a lost race too, so this loop ends.
            losses += not self._stream.known
            fresh = True
        return _busy(request, capacity)

    def _result_just_arrived(self) -> bool:
        """Return True when a result arrived too recently for its ack to count."""
        return time.monotonic() - self._last_result_at < sum(ACK_SETTLE_S) * 2

    async def _wait_for_slot(self, deadline: float) -> bool:
        """Wait at most `SLOT_POLL_S` for a freed slot; False once past `deadline`."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(woken)
        try:
            async with asyncio.timeout(min(remaining, SLOT_POLL_S)):
                await woken
        except TimeoutError:
            pass
        finally:
            # A timeout or a cancel leaves the future queued, unless a wake
            # popped it in the meantime.
            try:
                self._slot_waiters.remove(woken)
            except ValueError:
                pass
        return True

    def _wake_slot_waiter(self) -> None:
        while self._slot_waiters:
            woken = self._slot_waiters.popleft()
            if not woken.done():
                woken.set_result(None)
                return

    async def _publish(
        self, request: RunRequest, data: bytes, msg_id: str, reservation: Reservation
    ) -> PubAck | RunResult | None:
        """Publish under `reservation`; None means another publish got in first."""
        assert self._nc is not None
        subject = run_subject(self.settings, request.task)
        headers = {
            MSG_ID_HEADER: msg_id,
            EXPECTED_LAST_SEQ_HEADER: str(reservation.expected_last_seq),
            REPLY_HEADER: f"{self._inbox_prefix}.{request.run_id}",
        }
        stored = False
        try:
            ack = await publish(
                self._nc,
                subject,
                data,
                headers=headers,
                request_timeout=self.settings.request_timeout,
            )
            # A duplicate Nats-Msg-Id is acked without being stored.
            stored = not ack.duplicate
            return ack
        except APIError as exc:
            if exc.err_code == ERR_WRONG_LAST_SEQUENCE:
                return None
            if exc.err_code == ERR_MAX_MSGS:
                return _busy(request, self._capacity_hint())
            return _unreachable(request, f"the runs stream rejected the run: {exc}")
        except NoStreamResponseError:
            return _unreachable(request, f"no stream listens on {subject}")
        except TimeoutError:
            # The publish may still be stored once the server answers again;
            # the withdrawn record makes a runner drop it unrun.
            withdrawal = asyncio.create_task(self._withdraw_quietly(request))
            self._withdrawals.add(withdrawal)
            withdrawal.add_done_callback(self._withdrawals.discard)
            return _unreachable(request, "publishing the run timed out")
        finally:
            self._stream.settle(reservation, stored)

    async def _refresh_stream(self, request: RunRequest) -> RunResult | None:
        """Read the work queue's state; return why admission cannot go on, or None."""
        try:
            await self._stream.refresh()
        except NotFoundError:
            return _unreachable(
                request,
                f"stream {self.settings.runs_stream} does not exist; run "
                "'superpool provision'",
            )
        except (TimeoutError, nats.errors.Error):
            return _unreachable(request, "the runs stream did not respond")
        self.provisioned = True
        return None

    async def _read_capacity(self) -> int:
        return await self.registry.live_capacity()

    async def _read_stream_state(self) -> tuple[int, int]:
        if self._nc is None:
            raise PoolError(f"not connected to NATS at {self.settings.nats_url}")
        return await read_stream_state(
            self._nc, self.settings.runs_stream, self.settings.request_timeout
        )

    def _capacity_hint(self) -> int:
        return self._capacity.last

    async def _wait_started(
        self, request: RunRequest, waiter: _Waiter, stream_seq: int
    ) -> RunResult | None:
        """Wait for a runner to start the run; withdraw it when none does in time."""
        deadline = time.monotonic() + self.settings.pickup_timeout
        while True:
            event = await _next_event(waiter, deadline)
            if event is None:
                return await self._withdraw_after_pickup_timeout(request, stream_seq)
            await _relay(waiter, event)
            if event.kind == "result" and event.result is not None:
                return event.result
            if event.kind == "started":
                return None

    async def _withdraw_after_pickup_timeout(
        self, request: RunRequest, stream_seq: int
    ) -> RunResult | None:
        try:
            record = await self.writer.withdraw(
                request.run_id,
                task=request.task,
                caller=request.caller,
                stream_seq=stream_seq,
            )
        except (PoolError, TimeoutError, nats.errors.Error) as exc:
            return _unreachable(request, f"the registry did not respond: {exc}")
        if record.state == "final" and record.result is not None:
            return record.result
        if record.state == "running":
            # A runner claimed the run first (its "started" event may be
            # late or lost), so keep waiting for the result.
            return None
        if record.result is not None:
            # Someone cancelled the run while it was queued.
            return record.result
        try:
            capacity = await self.registry.live_capacity()
        except (PoolError, TimeoutError):
            capacity = 0
        if capacity:
            return _busy(
                request,
                capacity,
                f"no runner started the run within {self.settings.pickup_timeout:g} s",
            )
        return _unreachable(request, "no runner with a fresh heartbeat took the run")

    async def _wait_result(
        self, request: RunRequest, waiter: _Waiter, wait_s: float
    ) -> RunResult:
        deadline = time.monotonic() + wait_s
        while True:
            event = await _next_event(waiter, deadline)
            if event is None:
                break
            await _relay(waiter, event)
            if event.kind == "result" and event.result is not None:
                return event.result
        # The inbox is core NATS, so a result event can be lost in a
        # reconnect; the results stream keeps every result.
        stored = await self.result(request.run_id)
        if stored is not None:
            return stored
        return _timed_out(request, wait_s)

    async def cancel(self, run_id: str) -> RunResult:
        """Cancel a run: withdraw it while queued, or stop it on its runner.

        Returns the run's final result: CANCELLED, or the result it had
        already reached. A queued run's caller gets CANCELLED once a runner
        receives the withdrawn message or its own pickup wait ends.
        """
        if not self.connected:
            raise PoolError(f"not connected to NATS at {self.settings.nats_url}")
        record = await self.registry.get_run(run_id)
        if record is None:
            cancelled = _cancelled(run_id, "cancelled before a runner started it")
            record = await self.writer.withdraw(run_id, result=cancelled)
        if record.state == "withdrawn":
            return record.result or _cancelled(run_id, "withdrawn before it started")
        if record.state == "final" and record.result is not None:
            return record.result
        await self._ask_runner_to_cancel(record.runner_id, run_id)
        return await self._wait_final(run_id, CANCEL_SETTLE_S)

    async def _ask_runner_to_cancel(self, runner_id: str, run_id: str) -> None:
        assert self._nc is not None
        subject = cancel_subject(self.settings, runner_id, run_id)
        try:
            await self._nc.request(subject, b"", timeout=self.settings.request_timeout)
        except NoRespondersError:
            # The owner is gone and the run will come back to another runner,
            # so the record says withdrawn and that runner drops it.
            logger.warning(
                "cancel found no runner run_id=%s runner=%s", run_id, runner_id
            )
            cancelled = _cancelled(
                run_id, f"cancelled after runner {runner_id} was lost"
            )
            await self.writer.withdraw_lost(run_id, cancelled)
        except TimeoutError:
            raise PoolError(
                f"runner {runner_id} did not confirm the cancel of run {run_id} "
                f"within {self.settings.request_timeout} s"
            ) from None

    async def _wait_final(self, run_id: str, wait_s: float) -> RunResult:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            result = await self.result(run_id)
            if result is not None:
                return result
            await asyncio.sleep(RESULT_POLL_S)
        raise PoolError(f"run {run_id} reached no final result within {wait_s:g} s")

    async def _withdraw_quietly(self, request: RunRequest) -> None:
        try:
            await self.writer.withdraw(request.run_id, task=request.task)
        except (PoolError, TimeoutError, nats.errors.Error):
            logger.warning("could not withdraw run run_id=%s", request.run_id)

    # Reading

    async def result(self, run_id: str) -> RunResult | None:
        """Return a finished run's result, or None while it has none."""
        if not self.connected or self._js is None:
            raise PoolError(f"not connected to NATS at {self.settings.nats_url}")
        try:
            message = await self._js.get_last_msg(
                self.settings.results_stream,
                result_subject(self.settings, run_id),
                direct=True,
            )
        except (NotFoundError, NoRespondersError):
            # NoRespondersError: the results stream is gone; the record has it.
            message = None
        except TimeoutError as exc:
            raise PoolError(f"the results stream did not respond: {exc!r}") from None
        if message is not None and message.data:
            return decode_result(message.data)
        record = await self.registry.get_run(run_id)
        return record.result if record is not None else None

    async def status(self) -> PoolStatus:
        return await self.registry.status()


async def _next_event(waiter: _Waiter, deadline: float) -> RunEvent | None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    try:
        async with asyncio.timeout(remaining):
            return await waiter.queue.get()
    except TimeoutError:
        return None


async def _relay(waiter: _Waiter, event: RunEvent) -> None:
    if waiter.on_event is None:
        return
    try:
        await waiter.on_event(event)
    except Exception:
        logger.exception("event callback failed run_id=%s", event.run_id)


def _local_result(run_id: str, task: str, status: Status, message: str) -> RunResult:
    return RunResult(
        run_id=run_id,
        status=status,
        task=task if isinstance(task, str) else "",
        error=RunError(code=status, message=message),
    )


def _cancelled(run_id: str, reason: str) -> RunResult:
    return RunResult(
        run_id=run_id,
        status=Status.CANCELLED,
        finished_at=now(),
        error=RunError(code=Status.CANCELLED, message=reason),
    )


def _failure(
    request: RunRequest,
    status: Status,
    message: str,
    retry_after_s: float | None = None,
) -> RunResult:
    """Build the result of a request that ended without a runner's result."""
    return RunResult(
        run_id=request.run_id,
        status=status,
        task=request.task,
        adapter=request.adapter,
        caller=request.caller,
        retry_after_s=retry_after_s,
        error=RunError(code=status, message=message),
    )


def _timed_out(request: RunRequest, wait_s: float) -> RunResult:
    return _failure(
        request,
        Status.RUN_TIMEOUT,
        f"no result within {wait_s:g} s; the run may still finish: read it later "
        f"with 'superpool result {request.run_id}'",
    )


def _unreachable(request: RunRequest, reason: str) -> RunResult:
    return _failure(
        request,
        Status.POOL_UNREACHABLE,
        f"the pool did not respond: {reason}; escalate or run the task inline "
        "instead of retrying at once",
    )


def _busy(request: RunRequest, capacity: int, reason: str = "") -> RunResult:
    why = reason or f"all {capacity} live slots are busy"
    return _failure(
        request,
        Status.POOL_BUSY,
        f"{why}; nothing was queued. Retry with exponential backoff and jitter",
        retry_after_s=BUSY_RETRY_AFTER_S,
    )
