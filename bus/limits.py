"""Size limits of a run request, checked before anything is published.

Two limits bound a request on the wire: the runs stream's `max_msg_size`
(set to `max_request_bytes` by provisioning) and the server's `max_payload`.
nats-server 2.15 counts the headers in both, and it closes the connection of
a client that publishes past `max_payload`. nats-py 2.16 checks only the
payload, so the client keeps room for the headers itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bus.errors import InvalidRequestError
from bus.settings import Settings

logger = logging.getLogger(__name__)

# Room kept for a request's headers. The message id, the expected last
# sequence and the reply inbox take under 400 bytes plus the inbox prefix,
# which is at most 128 characters. The rest is margin for headers added later.
HEADERS_RESERVED_BYTES = 1024


@dataclass(frozen=True)
class RequestLimit:
    """Largest encoded request payload, and the setting that sets it."""

    max_bytes: int
    source: str


def request_limit(settings: Settings, server_max_payload: int = 0) -> RequestLimit:
    """Return the payload limit from `max_request_bytes` and the server's max_payload.

    `server_max_payload` is `nc.max_payload` of a connected client, or 0 when
    it is not known yet.
    """
    configured = settings.max_request_bytes
    if server_max_payload and server_max_payload < configured:
        logger.warning(
            "max_request_bytes=%d is above the server's max_payload=%d; requests "
            "are held to the server's limit",
            configured,
            server_max_payload,
        )
        source = f"the NATS server's max_payload ({server_max_payload} bytes)"
        return RequestLimit(server_max_payload - HEADERS_RESERVED_BYTES, source)
    source = f"max_request_bytes ({configured} bytes)"
    return RequestLimit(configured - HEADERS_RESERVED_BYTES, source)


def check_prompt_text(settings: Settings, prompt_text: str | None) -> None:
    """Reject a prompt_text longer than `max_prompt_bytes` in UTF-8.

    Raises:
        InvalidRequestError: the prompt is too long.
    """
    if prompt_text is None:
        return
    size = len(prompt_text.encode("utf-8", errors="surrogatepass"))
    if size > settings.max_prompt_bytes:
        raise InvalidRequestError(
            f"prompt_text is {size} bytes, above the limit of "
            f"{settings.max_prompt_bytes} bytes (SUPERPOOL_MAX_PROMPT_BYTES); "
            "send a prompt_file instead",
            field="prompt_text",
        )


def check_request_size(size: int, limit: RequestLimit) -> None:
    """Reject an encoded request of `size` bytes that is above `limit`.

    Raises:
        InvalidRequestError: the request is too large to publish.
    """
    if size > limit.max_bytes:
        raise InvalidRequestError(
            f"run request is {size} bytes, above the limit of {limit.max_bytes} "
            f"bytes: {limit.source} less {HEADERS_RESERVED_BYTES} bytes for "
            "headers; send a prompt_file instead of a long prompt_text",
            field="prompt_text",
        )
