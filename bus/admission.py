"""The client's view of the work queue and of live capacity, for admission.

Admission publishes a run only while the work queue contains fewer messages than
the live capacity, and it publishes with `Nats-Expected-Last-Sequence`, so
the server rejects a publish when any other message was stored since the
client looked. Reading the stream before every publish would cost a round
trip, so `StreamView` keeps the last observed `(messages, last_seq)` and
advances it by one for each publish that it lets through.

Why a kept view stays exact: in a work queue, acks and deletes remove
messages but never change `last_seq`. Say the view saw `m` messages at last
sequence `L`, and `k` reservations were handed out since, with the expected
last sequences `L`, `L + 1`, ..., `L + k - 1`. The publish that expects
`L + k - 1` is stored only when exactly `k - 1` messages were added since the
view looked, so the stream holds at most `m + k - 1` messages before it, and
the view handed it out only while `m + k - 1` was below the capacity. A count
that is too high only makes the view read the stream again before it
answers POOL_BUSY, and any other publisher's message makes every later
publish of this view fail with error 10071, after which the view reads again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NATS

from bus.jetstream import ApiError

# JetStream API prefix of the stream info request.
STREAM_INFO_SUBJECT = "$JS.API.STREAM.INFO."


class _StreamState(msgspec.Struct):
    messages: int = 0
    last_seq: int = 0


class _StreamInfoReply(msgspec.Struct):
    state: _StreamState | None = None
    error: ApiError | None = None


_REPLY_DECODER = msgspec.json.Decoder(_StreamInfoReply)


async def read_stream_state(
    nc: NATS, stream: str, request_timeout: float
) -> tuple[int, int]:
    """Return a stream's message count and last sequence in one request.

    Only the state is decoded: nats-py's `stream_info` builds the whole
    configuration as dataclasses, which costs more than the round trip.

    Raises:
        NotFoundError: the stream does not exist.
        APIError: the server rejected the request.
        TimeoutError: no response within `request_timeout` seconds.
    """
    reply = await nc.request(STREAM_INFO_SUBJECT + stream, b"", timeout=request_timeout)
    info = _REPLY_DECODER.decode(reply.data)
    if info.error is not None:
        info.error.raise_it()
    state = info.state or _StreamState()
    return state.messages, state.last_seq


@dataclass(frozen=True)
class Reservation:
    """The right to publish once, expecting `expected_last_seq`."""

    expected_last_seq: int
    generation: int


class StreamView:
    """The work queue's message count and last sequence as this client last saw it.

    Concurrent callers share one read at a time. Every reservation must be
    ended with `settle`, once its publish has succeeded or failed.
    """

    def __init__(self, read: Callable[[], Awaitable[tuple[int, int]]]) -> None:
        self._read = read
        self._known = False
        self._messages = 0
        self._last_seq = 0
        self._generation = 0
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._reading: asyncio.Future[None] | None = None

    @property
    def known(self) -> bool:
        return self._known

    def reserve(self, capacity: int) -> Reservation | None:
        """Hand out the next publish, or None at `capacity` messages or more."""
        if not self._known or self._messages >= capacity:
            return None
        reservation = Reservation(self._last_seq, self._generation)
        self._messages += 1
        self._last_seq += 1
        self._pending += 1
        self._idle.clear()
        return reservation

    def settle(self, reservation: Reservation, stored: bool) -> None:
        """End a reservation; a publish that was not stored invalidates the view."""
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()
        if not stored and reservation.generation == self._generation:
            self._known = False

    async def refresh(self) -> None:
        """Read the stream again once the publishes in flight have settled.

        Waiting for them keeps a POOL_BUSY result from counting a reservation
        whose publish is about to fail.
        """
        await self._idle.wait()
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read_now())
        await asyncio.shield(self._reading)

    async def _read_now(self) -> None:
        try:
            messages, last_seq = await self._read()
        finally:
            self._reading = None
        self._messages, self._last_seq = messages, last_seq
        self._generation += 1
        self._known = True


class CapacityView:
    """Live capacity, read again once it is older than `max_age_s`.

    A kept value is safe for as long as one heartbeat interval. The registry
    itself lags a runner that died by up to the heartbeat TTL, and one that
    joined or started draining by up to one heartbeat. The stream's
    `max_msgs` caps admission whatever this view contains. A run admitted into
    a slot that has just gone away waits for another slot, or is withdrawn
    after `pickup_timeout`. A kept zero is never used, so "no runner with a
    fresh heartbeat" always comes from a fresh read.
    """

    def __init__(self, read: Callable[[], Awaitable[int]], max_age_s: float) -> None:
        self._read = read
        self._max_age_s = max_age_s
        self._value = 0
        self._read_at = 0.0
        self._reading: asyncio.Future[int] | None = None

    async def get(self) -> int:
        if self._value and time.monotonic() - self._read_at < self._max_age_s:
            return self._value
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read_now())
        return await asyncio.shield(self._reading)

    @property
    def last(self) -> int:
        """The value of the last read, kept or not."""
        return self._value

    async def _read_now(self) -> int:
        started = time.monotonic()
        try:
            value = await self._read()
        finally:
            self._reading = None
        self._value, self._read_at = value, started
        return value
