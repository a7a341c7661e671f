"""The other side of the floor: a pull consumer and a core NATS responder.

Run as `python -m bench.floor_worker URL STREAM CONSUMER ECHO_SUBJECT` in a
process of its own, as the runners are. It fetches one message at a time from
the work-queue consumer, replies on core NATS to the inbox named in the
`Pool-Reply-To` header and acks, and it answers every core NATS request on
ECHO_SUBJECT. It prints "ready" once both subscriptions exist and stops at
EOF on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import nats
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from bus.subjects import REPLY_HEADER

# A fetch waits this long for a message before it asks again.
FETCH_WAIT_S = 5.0


async def serve(url: str, stream: str, consumer: str, echo_subject: str) -> None:
    """Answer floor requests until stdin reaches EOF."""
    nc = await nats.connect(url, name="bench-floor-worker")
    js = nc.jetstream()

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(echo_subject, cb=echo)
    subscription = await js.pull_subscribe_bind(consumer, stream=stream)
    print("ready", flush=True)

    async def pull() -> None:
        while True:
            try:
                messages = await subscription.fetch(1, timeout=FETCH_WAIT_S)
            except NatsTimeoutError:
                continue
            for msg in messages:
                reply = msg.headers.get(REPLY_HEADER) if msg.headers else None
                if reply:
                    await nc.publish(reply, msg.data)
                await msg.ack()

    puller = asyncio.create_task(pull())
    await asyncio.to_thread(sys.stdin.read)
    puller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await puller
    await nc.close()


def main() -> None:
    url, stream, consumer, echo_subject = sys.argv[1:5]
    asyncio.run(serve(url, stream, consumer, echo_subject))


if __name__ == "__main__":
    main()
