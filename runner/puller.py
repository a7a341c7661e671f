"""Pull requests on the runners' consumer, one per free slot.

nats-py's `fetch(n)` waits for the whole batch or its timeout before it
returns, which would hold a run that arrives on an idle runner for the rest
of the fetch timeout. The puller instead keeps its own pull requests open on
the consumer and hands over each message the moment it arrives. It never
has more requests open than the runner has free slots, so the server cannot
deliver more messages than the runner can start.

Every request is for one message, and all of them reply to subjects under
one wildcard subscription. JetStream delivers a message with its stream
subject, so a delivery does not tell which request it fulfils. With batches
of one, any delivery ends exactly one request. nats-server 2.15 served a
consumer's waiting requests oldest first in every trial here, so the puller
ends its oldest one. A status message (expired, or ended by the server)
names its request in its subject. Should the oldest guess ever be wrong,
the request that is still counted ends at its deadline. Until then the
puller undercounts its free slots, and it never overcounts them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

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
_REQUEST_BODY = json.dumps({"batch": 1, "expires": int(PULL_EXPIRES_S * 1e9)}).encode()


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
        # Reply subject to deadline of each open request, oldest first.
        self._open: dict[str, float] = {}
        self._counter = 0
        self._subscription: Subscription | None = None
        self.changed = asyncio.Event()

    @property
    def requested(self) -> int:
        """Messages that the open pull requests may still deliver."""
        return len(self._open)

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(
            f"{self._inbox}.*", cb=self._on_message
        )

    async def stop(self) -> None:
        self._open.clear()
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except Exception:
                logger.debug("unsubscribe of the pull inbox failed", exc_info=True)
            self._subscription = None

    async def forget_all(self) -> None:
        """Drop every open request and pull on a new inbox, as after a reconnect.

        A restarted server lost the requests, but one that stayed up may still
        serve them. Their inbox gets no subscriber again, so nothing they
        deliver reaches this runner, and the runner never receives more
        messages than it has slots. A message delivered there comes back
        after the consumer's ack_wait.
        """
        self._open.clear()
        old = self._subscription
        self._inbox = self._nc.new_inbox()
        await self.start()
        if old is not None:
            try:
                await old.unsubscribe()
            except Exception:
                logger.debug("unsubscribe of the old pull inbox failed", exc_info=True)
        self.changed.set()

    async def request(self, count: int) -> None:
        """Open `count` pull requests for one message each."""
        self.prune()
        deadline = time.monotonic() + PULL_EXPIRES_S + PULL_GRACE_S
        replies = [f"{self._inbox}.{self._counter + n}" for n in range(1, count + 1)]
        self._counter += count
        # Counted before the first publish yields, so a concurrent caller
        # never opens requests for the same free slots.
        for reply in replies:
            self._open[reply] = deadline
        for reply in replies:
            await self._nc.publish(self._next_subject, _REQUEST_BODY, reply=reply)

    def prune(self) -> None:
        """Forget requests that should have ended by now."""
        moment = time.monotonic()
        for reply in [reply for reply, end in self._open.items() if end < moment]:
            del self._open[reply]

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get(STATUS_HEADER) if msg.headers else None
        if status == HEARTBEAT_STATUS:
            return
        if status:
            # 408 (expired), 409 (a limit such as max_ack_pending was hit, or
            # the consumer changed) and 404 end the request named here.
            if status != "408":
                logger.debug(
                    "pull request ended status=%s description=%s",
                    status,
                    msg.headers.get("Description") if msg.headers else "",
                )
            self._open.pop(msg.subject, None)
            self.changed.set()
            return
        if self._open:
            del self._open[next(iter(self._open))]
        self._deliver(msg)
        self.changed.set()
