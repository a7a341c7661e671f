"""The backstop for runs whose every delivery was lost.

A message that reaches the consumer's `max_deliver` stays in a work-queue
stream, where it would hold a slot forever. A runner terms such a message
when it receives the last delivery (see runner/execution.py). When the
runner holding the last delivery dies too, nothing would remove it, so the
server's MAX_DELIVERIES advisory does: one runner (a queue group) ends the
run as RUN_FAILED, tells its caller and deletes the message.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from bus.errors import InvalidRequestError
from bus.subjects import (
    MSG_ID_HEADER,
    REPLY_HEADER,
    check_run_id,
    reply_subject,
    task_of_subject,
)
from bus.wire import decode_request
from runner.execution import lost_runner_result, publish_result

if TYPE_CHECKING:
    from runner.runner import Runner

logger = logging.getLogger(__name__)

ADVISORY_QUEUE = "superpool-advisories"


def advisory_subject(stream: str, consumer: str) -> str:
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"


async def on_max_deliveries(runner: Runner, advisory: Msg) -> None:
    """End the run behind a MAX_DELIVERIES advisory, unless a live runner has it."""
    try:
        event = json.loads(advisory.data)
        stream_seq = int(event["stream_seq"])
        deliveries = int(event.get("deliveries", runner.settings.max_deliver))
    except (ValueError, KeyError, TypeError):
        logger.warning("unreadable max-deliveries advisory: %r", advisory.data[:200])
        return
    stream = runner.settings.runs_stream
    try:
        message = await runner.js.get_msg(stream, seq=stream_seq)
    except NotFoundError:
        return
    run_id, task, reply_to = _identify(runner, message, stream_seq)
    # Every delivery was lost, the last one included.
    result = lost_runner_result(run_id, task, runner.runner_id, deliveries, deliveries)
    record = await runner.registry.fail_lost(run_id, result)
    current = await runner.registry.get_run(run_id)
    if record is None and current is not None and current.state == "running":
        if current.stream_seq == stream_seq:
            # Its runner is alive and acks the message when it finishes.
            return
        # A second message of a run that another message holds: no runner
        # would ever ack it, so it would hold a slot for good. Its caller
        # can read the run's result on the results stream.
        await _delete(runner, stream, stream_seq)
        logger.warning(
            "second message of a running run removed run_id=%s seq=%d run_seq=%d",
            run_id,
            stream_seq,
            current.stream_seq,
        )
        return
    await _delete(runner, stream, stream_seq)
    if record is not None:
        await publish_result(runner, result, reply_to)
        logger.warning(
            "run failed after lost runners run_id=%s lost=%d seq=%d",
            run_id,
            deliveries,
            stream_seq,
        )


def _identify(
    runner: Runner, message: RawStreamMsg, stream_seq: int
) -> tuple[str, str, str | None]:
    """Return (run_id, task, reply inbox) of a stored request, valid or not."""
    headers = message.headers or {}
    data = message.data or b""
    reply_to = reply_subject(headers.get(REPLY_HEADER))
    try:
        request = decode_request(data)
        run_id, task = request.run_id, request.task
    except InvalidRequestError:
        run_id, task = "", ""
    if not run_id:
        run_id = headers.get(MSG_ID_HEADER, "") or f"seq-{stream_seq}"
    try:
        check_run_id(run_id)
    except InvalidRequestError:
        run_id = f"seq-{stream_seq}"
    return (
        run_id,
        task or task_of_subject(runner.settings, message.subject or ""),
        reply_to,
    )


async def _delete(runner: Runner, stream: str, stream_seq: int) -> None:
    try:
        await runner.js.delete_msg(stream, stream_seq)
    except NotFoundError:
        pass
