"""RunRegistry: runner heartbeats and run records in one JetStream KV bucket.

Keys:
    runner.<runner_id>  RunnerState, written every heartbeat with a per-message
                        TTL, so a dead runner's key expires on its own.
    run.<run_id>        RunRecord, moved between states with revision-checked
                        writes. The revision a runner got when it claimed a run
                        is its lease: a write with an older revision fails, so
                        a runner that lost its lease cannot overwrite a result.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from bus.errors import PoolError
from bus.jetstream import publish_expecting
from bus.provision import KV_STREAM_PREFIX
from bus.settings import Settings
from bus.subjects import RUNNER_KEY_PREFIX, run_key, runner_key
from bus.wire import (
    RunnerState,
    RunRecord,
    RunResult,
    decode_record,
    decode_runner,
    encode,
    now,
)

logger = logging.getLogger(__name__)

# Upper bound on keys returned by one batched read of the bucket.
MAX_BATCH_KEYS = 10_000
# A claim may race another runner's claim or takeover; retry this often.
CLAIM_ATTEMPTS = 3


class LeaseLostError(PoolError):
    """Another runner took the run over; this runner must not answer for it."""

    def __init__(self, run_id: str, runner_id: str) -> None:
        super().__init__(
            f"runner {runner_id} lost the lease of run {run_id}: another runner "
            "claimed it after this runner's heartbeat expired"
        )
        self.run_id = run_id
        self.runner_id = runner_id


@dataclass(frozen=True)
class Claim:
    """What a runner found when it tried to claim a run.

    outcome:
        claimed    the runner holds the lease, at `revision`
        final      the run already has a result in `record`
        withdrawn  the caller withdrew the run before any runner claimed it
        owned      a live runner holds the run; leave it alone
    """

    outcome: Literal["claimed", "final", "withdrawn", "owned"]
    record: RunRecord
    revision: int = 0
    # The record of the runner that held the run before a takeover.
    previous: RunRecord | None = None


def final_record(claimed: RunRecord, runner_id: str, result: RunResult) -> RunRecord:
    """Return the final record of a run, keeping what its claim recorded."""
    return RunRecord(
        run_id=claimed.run_id,
        state="final",
        task=result.task,
        adapter=result.adapter,
        caller=result.caller,
        runner_id=runner_id,
        attempt=result.attempt,
        stream_seq=claimed.stream_seq,
        claimed_at=claimed.claimed_at,
        updated_at=now(),
        result=result,
    )


@dataclass(frozen=True)
class PoolStatus:
    runners: list[RunnerState] = field(default_factory=list)
    slots_total: int = 0
    slots_busy: int = 0
    # Runs that the runners report as running.
    running: list[str] = field(default_factory=list)
    # Messages in the work queue: queued plus running.
    in_stream: int = 0

    @property
    def slots_free(self) -> int:
        return max(0, self.slots_total - self.slots_busy)

    @property
    def queued(self) -> int:
        return max(0, self.in_stream - len(self.running))


class RunRegistry:
    """Reads and writes the pool's registry bucket."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, kv: KeyValue, settings: Settings
    ):
        self._nc = nc
        self._js = js
        self._kv = kv
        self._settings = settings
        self._bucket = settings.registry_bucket
        self._stream = KV_STREAM_PREFIX + self._bucket

    @classmethod
    async def open(cls, nc: NATS, settings: Settings) -> RunRegistry:
        js = nc.jetstream(timeout=settings.request_timeout)
        kv = await js.key_value(settings.registry_bucket)
        return cls(nc, js, kv, settings)

    def _subject(self, key: str) -> str:
        return f"$KV.{self._bucket}.{key}"

    async def _create(self, key: str, value: bytes) -> int:
        """Create `key`; return its revision.

        Raises:
            KeyWrongLastSequenceError: the key exists.
        """
        try:
            return await self._update(key, value, 0)
        except KeyWrongLastSequenceError as exists:
            conflict = exists
        # A deleted or purged key keeps a marker, which a create must expect.
        # nats-py's get raises KeyNotFoundError for it, with the marker entry.
        try:
            await self._kv.get(key)
        except KeyNotFoundError as missing:
            if missing.entry is not None and missing.entry.revision:
                return await self._update(key, value, missing.entry.revision)
        raise conflict

    async def _update(self, key: str, value: bytes, last: int) -> int:
        """Write `key` only if its revision is `last`; return the new revision.

        Raises:
            KeyWrongLastSequenceError: the key's revision is not `last`.
        """
        return await publish_expecting(
            self._nc,
            self._subject(key),
            value,
            last,
            request_timeout=self._settings.request_timeout,
        )

    # Runners

    async def heartbeat(self, state: RunnerState) -> None:
        """Write a runner's state, which expires `heartbeat_ttl_s` after this write."""
        await self._js.publish(
            self._subject(runner_key(state.runner_id)),
            encode(state),
            msg_ttl=self._settings.heartbeat_ttl_s,
        )

    async def remove_runner(self, runner_id: str) -> None:
        await self._kv.purge(runner_key(runner_id))

    async def runners(self) -> list[RunnerState]:
        """Return every runner whose heartbeat has not expired, ready or not."""
        states = []
        for data in await self._read_last(RUNNER_KEY_PREFIX + ">"):
            try:
                states.append(decode_runner(data))
            except msgspec.DecodeError:
                logger.warning("unreadable runner entry in the registry skipped")
        return sorted(states, key=lambda state: state.runner_id)

    async def runner(self, runner_id: str) -> RunnerState | None:
        data = await self._get(runner_key(runner_id))
        return decode_runner(data) if data else None

    async def owner_runs(self, record: RunRecord) -> bool:
        """Return True while the runner named in a running record still runs it.

        The runner must be alive, and its heartbeat must list the run unless
        the heartbeat is less than one heartbeat interval newer than the
        record (both times come from that runner's clock). A live runner
        that dropped the run, for example after its result write failed, no
        longer runs it, so a redelivery takes the run over.
        """
        state = await self.runner(record.runner_id)
        if state is None:
            return False
        settled = record.updated_at + self._settings.heartbeat_interval_s
        return record.run_id in state.runs or state.heartbeat_at < settled

    async def live_capacity(self) -> int:
        """Return the sum of slots over runners that are alive and ready."""
        return sum(
            state.slots for state in await self.runners() if state.state == "ready"
        )

    async def status(self) -> PoolStatus:
        """Return the pool summary.

        Raises:
            PoolError: the registry or the runs stream did not respond.
        """
        runners = await self.runners()
        stream = self._settings.runs_stream
        try:
            info = await self._js.stream_info(stream)
        except (TimeoutError, nats.errors.Error) as exc:
            raise PoolError(f"stream {stream} did not respond: {exc!r}") from None
        ready = [state for state in runners if state.state == "ready"]
        return PoolStatus(
            runners=runners,
            slots_total=sum(state.slots for state in ready),
            slots_busy=sum(state.busy for state in runners),
            running=[run for state in runners for run in state.runs],
            in_stream=info.state.messages,
        )

    # Runs

    async def get_run(self, run_id: str) -> RunRecord | None:
        data = await self._get(run_key(run_id))
        return decode_record(data) if data else None

    async def run_entry(self, run_id: str) -> tuple[RunRecord, int] | None:
        """Return a run's record with its revision, or None."""
        return await self._entry(run_key(run_id))

    async def reopen(self, run_id: str, revision: int) -> bool:
        """Delete the withdrawn record at `revision`, so the run can run again."""
        try:
            await self._kv.delete(run_key(run_id), last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def claim(self, record: RunRecord) -> Claim:
        """Claim a run for `record.runner_id`, or say why the runner must not run it.

        A new run is claimed with a create. A run whose record says "running"
        is taken over only when its owner's heartbeat has expired.
        """
        key = run_key(record.run_id)
        for _ in range(CLAIM_ATTEMPTS):
            try:
                revision = await self._create(key, encode(record))
                return Claim("claimed", record, revision)
            except KeyWrongLastSequenceError:
                pass
            entry = await self._entry(key)
            if entry is None:
                continue
            current, revision = entry
            if current.state in ("final", "withdrawn"):
                return Claim(current.state, current, revision)
            if current.runner_id != record.runner_id and await self.owner_runs(current):
                return Claim("owned", current, revision)
            try:
                revision = await self._update(key, encode(record), revision)
            except KeyWrongLastSequenceError:
                continue
            logger.warning(
                "run taken over run_id=%s runner=%s previous_runner=%s attempt=%d",
                record.run_id,
                record.runner_id,
                current.runner_id,
                record.attempt,
            )
            return Claim("claimed", record, revision, previous=current)
        entry = await self._entry(key)
        current = entry[0] if entry else record
        return Claim("owned", current, entry[1] if entry else 0)

    async def finish(
        self,
        run_id: str,
        runner_id: str,
        revision: int,
        result: RunResult,
        claimed: RunRecord | None = None,
    ) -> int:
        """Store the final result under the lease `revision`.

        `claimed` is the record the runner wrote when it claimed the run. It
        saves reading the record back, because the lease check fails anyway
        when any other write happened since.

        Raises:
            LeaseLostError: another runner claimed the run since.
        """
        current = claimed if claimed is not None else await self.get_run(run_id)
        record = final_record(
            current or RunRecord(run_id=run_id, state="running"), runner_id, result
        )
        try:
            return await self._update(run_key(run_id), encode(record), revision)
        except KeyWrongLastSequenceError:
            raise LeaseLostError(run_id, runner_id) from None

    async def store_first(self, record: RunRecord) -> bool:
        """Create a run's record, final or not; False when the run has one already.

        A runner whose run ended before it needed a claim stores the final
        record this way: the create is the claim and the result in one write.
        """
        try:
            await self._create(run_key(record.run_id), encode(record))
        except KeyWrongLastSequenceError:
            return False
        return True

    async def finish_unclaimed(self, result: RunResult) -> bool:
        """Store the final result of a run that no runner claimed, such as bad input.

        Returns False when a record exists already.
        """
        blank = RunRecord(run_id=result.run_id, state="running")
        return await self.store_first(final_record(blank, result.runner_id, result))

    async def withdraw(
        self,
        run_id: str,
        *,
        task: str = "",
        caller: str = "",
        result: RunResult | None = None,
    ) -> RunRecord:
        """Mark a run that no runner claimed as withdrawn, and return the record.

        The create loses to a runner's claim: the returned record then says
        "running" or "final". `result`, when given, is what a caller who waits
        for the withdrawn run gets, such as CANCELLED.
        """
        record = RunRecord(
            run_id=run_id,
            state="withdrawn",
            task=task,
            caller=caller,
            updated_at=now(),
            result=result,
        )
        for _ in range(CLAIM_ATTEMPTS):
            try:
                await self._create(run_key(run_id), encode(record))
                return record
            except KeyWrongLastSequenceError:
                current = await self.get_run(run_id)
            if current is not None:
                return current
        return record

    async def withdraw_lost(self, run_id: str, result: RunResult) -> RunRecord | None:
        """Withdraw a running run whose runner's heartbeat expired.

        Returns the withdrawn record, or None when the run is not running on
        a lost runner (it finished, or its runner is alive).
        """
        return await self._close_lost(run_id, "withdrawn", result)

    async def fail_lost(self, run_id: str, result: RunResult) -> RunRecord | None:
        """Store a final result for a run whose runner was lost, or that nobody claimed.

        Returns None when the run finished or a live runner holds it.
        """
        if await self.finish_unclaimed(result):
            return await self.get_run(run_id)
        return await self._close_lost(run_id, "final", result)

    async def _close_lost(
        self, run_id: str, state: Literal["final", "withdrawn"], result: RunResult
    ) -> RunRecord | None:
        entry = await self._entry(run_key(run_id))
        if entry is None:
            return None
        current, revision = entry
        if current.state != "running" or await self.owner_runs(current):
            return None
        record = msgspec.structs.replace(
            current, state=state, updated_at=now(), result=result
        )
        try:
            await self._update(run_key(run_id), encode(record), revision)
        except KeyWrongLastSequenceError:
            return None
        return record

    async def runs(self) -> list[RunRecord]:
        records = []
        for data in await self._read_last("run.>"):
            try:
                records.append(decode_record(data))
            except msgspec.DecodeError:
                logger.warning("unreadable run record in the registry skipped")
        return records

    # Reads

    async def _get(self, key: str) -> bytes | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value or None

    async def _entry(self, key: str) -> tuple[RunRecord, int] | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        if not entry.value or entry.revision is None:
            return None
        return decode_record(entry.value), entry.revision

    async def _read_last(self, key_filter: str) -> list[bytes]:
        """Read the latest value of every key matching `key_filter` in one request.

        This is a batched direct get (nats-server 2.11+): one round trip, where
        listing keys would create and tear down a consumer.
        """
        inbox = self._nc.new_inbox()
        values: list[bytes] = []
        done = asyncio.Event()

        async def on_message(msg: Msg) -> None:
            status = msg.headers.get("Status") if msg.headers else None
            if status:
                done.set()
                return
            if msg.headers and msg.headers.get("KV-Operation") in ("DEL", "PURGE"):
                return
            if msg.data:
                values.append(msg.data)

        sub = await self._nc.subscribe(inbox, cb=on_message)
        try:
            request = {
                "multi_last": [self._subject(key_filter)],
                "batch": MAX_BATCH_KEYS,
            }
            await self._nc.publish(
                f"$JS.API.DIRECT.GET.{self._stream}", encode(request), reply=inbox
            )
            try:
                await asyncio.wait_for(done.wait(), self._settings.request_timeout)
            except TimeoutError:
                raise PoolError(
                    f"registry bucket {self._bucket} did not respond within "
                    f"{self._settings.request_timeout} s"
                ) from None
        finally:
            await sub.unsubscribe()
        return values
