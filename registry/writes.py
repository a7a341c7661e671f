"""Registry writes that clients ask the runners to make.

Agents may read the registry but not write it: an agent credential that
could write run records could overwrite any run's result. So a client that
withdraws a run (its pickup wait ended, or it cancels a queued run) or
reopens a withdrawn one sends the request to `<prefix>.registry.<action>`,
and one runner of a queue group makes the revision-checked write for it.
With no runner listening, the client writes the registry itself, which
works where NATS has no users set up (one machine, tests).

Actions:
    withdraw       create run.<id> in state "withdrawn", and delete the
                   queued message at `stream_seq` once the write won
    reopen         delete a withdrawn record at `revision`
    withdraw_lost  withdraw a running run whose runner's heartbeat expired
"""

from __future__ import annotations

import logging

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from bus.errors import InvalidRequestError, PoolError
from bus.settings import Settings
from bus.subjects import MSG_ID_HEADER, check_run_id
from bus.wire import RunRecord, RunResult, decode_request, encode
from registry.registry import RunRegistry

logger = logging.getLogger(__name__)

WRITES_QUEUE = "superpool-registry"
ACTIONS = ("withdraw", "reopen", "withdraw_lost")


class RegistryWrite(msgspec.Struct, kw_only=True, omit_defaults=True):
    run_id: str
    task: str = ""
    caller: str = ""
    result: RunResult | None = None
    stream_seq: int = 0
    revision: int = 0


class WriteReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    record: RunRecord | None = None
    done: bool = False
    error: str = ""


def writes_subject(settings: Settings, action: str) -> str:
    return f"{settings.subject_prefix}.registry.{action}"


class RegistryWriter:
    """Client side: ask a runner to write, or write directly when none listens."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, registry: RunRegistry, settings: Settings
    ) -> None:
        self._nc = nc
        self._js = js
        self._registry = registry
        self._settings = settings

    async def withdraw(
        self,
        run_id: str,
        *,
        task: str = "",
        caller: str = "",
        result: RunResult | None = None,
        stream_seq: int = 0,
    ) -> RunRecord:
        write = RegistryWrite(
            run_id=run_id,
            task=task,
            caller=caller,
            result=result,
            stream_seq=stream_seq,
        )
        reply = await self._ask("withdraw", write)
        if reply is not None:
            if reply.record is None:
                raise PoolError(f"withdrawing run {run_id} failed: {reply.error}")
            return reply.record
        return await apply_withdraw(self._registry, self._js, self._settings, write)

    async def reopen(self, run_id: str, revision: int) -> bool:
        reply = await self._ask(
            "reopen", RegistryWrite(run_id=run_id, revision=revision)
        )
        if reply is not None:
            return reply.done
        return await self._registry.reopen(run_id, revision)

    async def withdraw_lost(self, run_id: str, result: RunResult) -> RunRecord | None:
        reply = await self._ask(
            "withdraw_lost", RegistryWrite(run_id=run_id, result=result)
        )
        if reply is not None:
            return reply.record
        return await self._registry.withdraw_lost(run_id, result)

    async def _ask(self, action: str, write: RegistryWrite) -> WriteReply | None:
        try:
            answer = await self._nc.request(
                writes_subject(self._settings, action),
                encode(write),
                timeout=self._settings.request_timeout,
            )
        except nats.errors.NoRespondersError:
            return None
        except TimeoutError:
            raise PoolError(
                f"no runner responded to the {action} of run {write.run_id} within "
                f"{self._settings.request_timeout} s"
            ) from None
        return msgspec.json.decode(answer.data, type=WriteReply)


async def apply_withdraw(
    registry: RunRegistry,
    js: JetStreamContext,
    settings: Settings,
    write: RegistryWrite,
) -> RunRecord:
    """Withdraw the run, then delete its queued message if the withdrawal won."""
    record = await registry.withdraw(
        write.run_id, task=write.task, caller=write.caller, result=write.result
    )
    if record.state == "withdrawn" and write.stream_seq:
        await _delete_if_same_run(js, settings, write.run_id, write.stream_seq)
    return record


async def _delete_if_same_run(
    js: JetStreamContext, settings: Settings, run_id: str, stream_seq: int
) -> None:
    # The sequence comes from the caller, so check that the message there is
    # this run's before deleting it: a caller must not delete other runs.
    stream = settings.runs_stream
    try:
        message = await js.get_msg(stream, seq=stream_seq)
    except (NotFoundError, APIError, TimeoutError):
        return
    headers = message.headers or {}
    try:
        stored_id = decode_request(message.data or b"").run_id
    except InvalidRequestError:
        stored_id = ""
    if run_id not in (stored_id, headers.get(MSG_ID_HEADER)):
        logger.warning(
            "withdraw named another run's message run_id=%s seq=%d", run_id, stream_seq
        )
        return
    try:
        await js.delete_msg(stream, stream_seq)
    except (NotFoundError, APIError, TimeoutError):
        # A withdrawn run that stays in the stream is dropped by the runner
        # that receives it, because it sees the withdrawn record.
        logger.debug("withdrawn run message not deleted seq=%d", stream_seq)


async def serve_writes(
    nc: NATS, js: JetStreamContext, registry: RunRegistry, settings: Settings
) -> None:
    """Subscribe a runner to the registry write requests of clients."""

    async def on_request(msg: Msg) -> None:
        action = msg.subject.rsplit(".", 1)[-1]
        try:
            write = msgspec.json.decode(msg.data, type=RegistryWrite)
            check_run_id(write.run_id)
            reply = await _perform(action, write, registry, js, settings)
        except (msgspec.DecodeError, InvalidRequestError) as exc:
            reply = WriteReply(error=f"invalid registry write: {exc}")
        except (PoolError, TimeoutError, nats.errors.Error) as exc:
            logger.warning("registry write failed action=%s error=%r", action, exc)
            reply = WriteReply(error=repr(exc))
        await msg.respond(encode(reply))

    await nc.subscribe(writes_subject(settings, "*"), queue=WRITES_QUEUE, cb=on_request)


async def _perform(
    action: str,
    write: RegistryWrite,
    registry: RunRegistry,
    js: JetStreamContext,
    settings: Settings,
) -> WriteReply:
    if action == "withdraw":
        return WriteReply(record=await apply_withdraw(registry, js, settings, write))
    if action == "reopen":
        entry = await registry.run_entry(write.run_id)
        # Only a withdrawal without a result (no cancel) may be undone.
        reopenable = (
            entry is not None
            and entry[1] == write.revision
            and entry[0].state == "withdrawn"
            and entry[0].result is None
        )
        done = reopenable and await registry.reopen(write.run_id, write.revision)
        return WriteReply(done=done)
    if action == "withdraw_lost" and write.result is not None:
        return WriteReply(
            record=await registry.withdraw_lost(write.run_id, write.result)
        )
    return WriteReply(
        error=f"unknown registry action {action!r}: use {', '.join(ACTIONS)}"
    )
