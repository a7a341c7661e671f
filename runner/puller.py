"""Pull requests on the runners' consumer, sized to the runner's free slots.

nats-py's `fetch(n)` waits for the whole batch or its timeout before it
returns, which would hold a run that arrives on an idle runner for the rest
of the fetch timeout. The puller instead keeps its own pull requests open on
the consumer and hands over each message the moment it arrives. The batch
sizes of the open requests never add up to more than the free slots, so the
server cannot deliver more messages than the runner can start.

Each pull request has its own subscription: JetStream delivers a message
with its stream subject, not the request's reply subject, so the
subscription is what tells which request a message fulfils.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

logger = logging.getLogger(__name__)

# How long the server keeps one pull request open. A short expiry bounds how
# long a request lost in a server restart can hold the runner's slot count.
PULL_EXPIRES_S = 5.0
# A request the server has not ended this long after its expiry is lost.
PULL_GRACE_S = 2.0
STATUS_HEADER = "Status"
HEARTBEAT_STATUS = "100"


@dataclass
class _PullRequest:
    remaining: int
    deadline: float
    subscription: Subscription | None = None


class Puller:
    """Keep pull requests open and pass each delivered message to `deliver`."""

    def __init__(
        self,
        nc: NATS,
        stream: str,
        consumer: str,
        deliver: Callable[[Msg], None],
    ) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._deliver = deliver
        self._inbox = nc.new_inbox()
        self._requests: dict[str, _PullRequest] = {}
        self._counter = 0
        self.changed = asyncio.Event()

    @property
    def requested(self) -> int:
        """Messages that the open pull requests may still deliver."""
        return sum(request.remaining for request in self._requests.values())

    async def stop(self) -> None:
        for reply in list(self._requests):
            await self._end(reply)

    async def forget_all(self) -> None:
        """Drop every open request, as after a reconnect, when the server lost them."""
        await self.stop()
        self.changed.set()

    async def request(self, batch: int) -> None:
        """Open one pull request for up to `batch` messages."""
        await self.prune()
        self._counter += 1
        reply = f"{self._inbox}.{self._counter}"
        request = _PullRequest(
            remaining=batch, deadline=time.monotonic() + PULL_EXPIRES_S + PULL_GRACE_S
        )
        self._requests[reply] = request

        async def on_message(msg: Msg) -> None:
            await self._on_message(reply, msg)

        request.subscription = await self._nc.subscribe(reply, cb=on_message)
        body = {"batch": batch, "expires": int(PULL_EXPIRES_S * 1e9)}
        await self._nc.publish(
            self._next_subject, json.dumps(body).encode(), reply=reply
        )

    async def prune(self) -> None:
        """Forget requests that should have ended by now."""
        moment = time.monotonic()
        for reply in [r for r, req in self._requests.items() if req.deadline < moment]:
            await self._end(reply)

    async def _end(self, reply: str) -> None:
        request = self._requests.pop(reply, None)
        if request is not None and request.subscription is not None:
            try:
                await request.subscription.unsubscribe()
            except Exception:
                logger.debug(
                    "unsubscribe of an ended pull request failed", exc_info=True
                )

    async def _on_message(self, reply: str, msg: Msg) -> None:
        status = msg.headers.get(STATUS_HEADER) if msg.headers else None
        if status == HEARTBEAT_STATUS:
            return
        if status:
            # 408 (expired), 409 (a limit such as max_ack_pending was hit, or
            # the consumer changed) and 404 end the request.
            if status != "408":
                logger.debug(
                    "pull request ended status=%s description=%s",
                    status,
                    msg.headers.get("Description") if msg.headers else "",
                )
            await self._end(reply)
            self.changed.set()
            return
        request = self._requests.get(reply)
        if request is not None:
            request.remaining -= 1
            if request.remaining <= 0:
                await self._end(reply)
        self._deliver(msg)
        self.changed.set()
