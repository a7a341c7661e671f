"""JetStream API calls on the hot path, decoding only the fields the pool reads.

nats-py's `JetStreamContext.publish` parses every acknowledgement with
`json.loads` and builds a dataclass by reflection, and both showed in the
profile of the pool's hot path. These helpers send the same requests and
raise nats-py's own exception classes, so callers keep their `except`
clauses.
"""

from __future__ import annotations

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.js.errors import APIError, KeyWrongLastSequenceError, NoStreamResponseError

EXPECTED_LAST_SUBJECT_SEQ_HEADER = "Nats-Expected-Last-Subject-Sequence"
# JetStream error codes (nats-server) of a failed expected-sequence check.
WRONG_LAST_SEQUENCE_CODES = (10071, 10164)


class ApiError(msgspec.Struct):
    """The `error` object of a JetStream API response."""

    code: int = 0
    err_code: int = 0
    description: str = ""

    def raise_it(self) -> None:
        """Raise the nats-py exception that nats-py raises for this error."""
        APIError.from_error(msgspec.structs.asdict(self))


class PubAck(msgspec.Struct):
    """A JetStream publish acknowledgement."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None


_PUB_ACK = msgspec.json.Decoder(PubAck)


def decode_pub_ack(data: bytes) -> PubAck:
    """Decode a publish acknowledgement; raise its error when it carries one.

    Raises:
        APIError: the server rejected the publish (a subclass by HTTP code).
    """
    ack = _PUB_ACK.decode(data)
    if ack.error is not None:
        ack.error.raise_it()
    return ack


async def publish(
    nc: NATS,
    subject: str,
    payload: bytes,
    *,
    request_timeout: float,
    headers: dict[str, str] | None = None,
) -> PubAck:
    """Publish to a stream and wait for its acknowledgement.

    Raises:
        NoStreamResponseError: no stream captures `subject`.
        APIError: the server rejected the publish.
        TimeoutError: no acknowledgement within `request_timeout` seconds.
    """
    try:
        reply = await nc.request(
            subject, payload, timeout=request_timeout, headers=headers
        )
    except NoRespondersError:
        raise NoStreamResponseError from None
    return decode_pub_ack(reply.data)


async def publish_expecting(
    nc: NATS, subject: str, payload: bytes, last: int, *, request_timeout: float
) -> int:
    """Publish only if `subject`'s last message has sequence `last` (0: none).

    This is a KV create (`last=0`) or update; returns the new sequence.

    Raises:
        KeyWrongLastSequenceError: the subject's last sequence is not `last`.
    """
    headers = {EXPECTED_LAST_SUBJECT_SEQ_HEADER: str(last)}
    try:
        ack = await publish(
            nc, subject, payload, request_timeout=request_timeout, headers=headers
        )
    except APIError as exc:
        if exc.err_code in WRONG_LAST_SEQUENCE_CODES:
            raise KeyWrongLastSequenceError(description=exc.description) from None
        raise
    return ack.seq
