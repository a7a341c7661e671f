"""The physical floor: a raw JetStream round trip and a core NATS request-reply.

Both use nats-py alone, with the consumer in another process, so that a pool
figure divided by its floor is the cost of the pool's own work.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass

import nats
from nats.aio.msg import Msg
from nats.js import api

from bench.harness import spawn
from bench.stats import Summary, summarize, time_calls
from bus.subjects import REPLY_HEADER
from bus.wire import RunRequest, encode

FLOOR_STREAM = "BENCH_FLOOR"
FLOOR_SUBJECT = "benchfloor.run"
FLOOR_CONSUMER = "floor"
ECHO_SUBJECT = "benchfloor.echo"
# The floor's payload is a pool run request, so both move the same bytes.
PAYLOAD = encode(
    RunRequest(task="bench", run_id="0" * 32, prompt_text="ping", adapter="echo")
)
# One round trip never takes this long on loopback; past it the worker is gone.
REPLY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Floor:
    jetstream: Summary
    core: Summary


async def measure_floor(url: str, count: int, warmup: int) -> Floor:
    """Time `count` JetStream round trips and `count` core request-replies."""
    nc = await nats.connect(url, name="bench-floor")
    js = nc.jetstream()
    await js.add_stream(
        api.StreamConfig(
            name=FLOOR_STREAM,
            subjects=[FLOOR_SUBJECT],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
        )
    )
    await js.add_consumer(
        FLOOR_STREAM,
        api.ConsumerConfig(
            durable_name=FLOOR_CONSUMER, ack_policy=api.AckPolicy.EXPLICIT
        ),
    )
    worker = spawn(
        [
            sys.executable,
            "-m",
            "bench.floor_worker",
            url,
            FLOOR_STREAM,
            FLOOR_CONSUMER,
            ECHO_SUBJECT,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert worker.stdout is not None
        line = await asyncio.to_thread(worker.stdout.readline)
        if line.strip() != b"ready":
            raise RuntimeError(f"floor worker did not start: {line!r}")
        inbox = nc.new_inbox()
        waiting: list[asyncio.Future[None]] = []

        async def on_reply(msg: Msg) -> None:
            if waiting and not waiting[0].done():
                waiting[0].set_result(None)

        await nc.subscribe(inbox, cb=on_reply)
        headers = {REPLY_HEADER: inbox}

        async def jetstream_round_trip() -> None:
            reply = asyncio.get_running_loop().create_future()
            waiting[:] = [reply]
            await js.publish(FLOOR_SUBJECT, PAYLOAD, headers=headers)
            await asyncio.wait_for(reply, REPLY_TIMEOUT_S)

        async def core_request() -> None:
            await nc.request(ECHO_SUBJECT, PAYLOAD, timeout=REPLY_TIMEOUT_S)

        jetstream = await time_calls(jetstream_round_trip, count, warmup)
        core = await time_calls(core_request, count, warmup)
    finally:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.close()
        await asyncio.to_thread(worker.wait, 10)
        worker.stdout.close()
        await js.delete_stream(FLOOR_STREAM)
        await nc.close()
    return Floor(summarize(jetstream), summarize(core))
