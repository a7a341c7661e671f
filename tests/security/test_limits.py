"""Size limits of prompts and requests, each with its error message."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from bus.client import PoolClient
from bus.connection import connect
from bus.provision import provision
from bus.server import EmbeddedServer
from bus.settings import Settings
from bus.wire import RunResult, Status
from tests.conftest import make_settings
from tests.pool import running_pool

# The server's max_payload in the small-payload tests, in bytes.
SMALL_MAX_PAYLOAD = 8192


def _message(result: RunResult) -> str:
    assert result.error is not None
    return result.error.message


async def _queued(nc: NATS, settings: Settings) -> int:
    info = await nc.jetstream().stream_info(settings.runs_stream)
    return info.state.messages


async def test_prompt_text_too_long(settings: Settings, nc: NATS) -> None:
    limited = settings.replace(max_prompt_bytes=100)
    async with running_pool(limited, runners=1), PoolClient(limited) as client:
        # 60 two-byte characters: 60 characters, 120 bytes.
        result = await client.run("big", prompt_text="é" * 60, adapter="echo")
        fits = await client.run("small", prompt_text="é" * 50, adapter="echo")
    assert result.status == Status.INVALID_REQUEST
    assert _message(result) == (
        "prompt_text is 120 bytes, above the limit of 100 bytes "
        "(SUPERPOOL_MAX_PROMPT_BYTES); send a prompt_file instead"
    )
    assert fits.status == Status.OK
    assert await _queued(nc, settings) == 0


REQUEST_TOO_LARGE = re.compile(
    r"run request is (\d+) bytes, above the limit of 3072 bytes: "
    r"max_request_bytes \(4096 bytes\) less 1024 bytes for headers; send a "
    r"prompt_file instead of a long prompt_text"
)


async def test_request_too_large(settings: Settings) -> None:
    limited = settings.replace(max_request_bytes=4096)
    # Provisioning sets the stream's max_msg_size to max_request_bytes.
    admin = await connect(limited, name="test-provision")
    await provision(admin.jetstream(), limited)
    async with running_pool(limited, runners=1), PoolClient(limited) as client:
        result = await client.run("big", prompt_text="x" * 3500, adapter="echo")
        # Just under the client's limit: the headers still fit in the stream.
        fits = await client.run("fits", prompt_text="x" * 2800, adapter="echo")
    await admin.close()
    match = REQUEST_TOO_LARGE.fullmatch(_message(result))
    assert result.status == Status.INVALID_REQUEST
    assert match is not None
    assert 3500 < int(match.group(1)) < 3800
    assert fits.status == Status.OK


@pytest.fixture
async def small_payload(tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings for a fresh server whose max_payload is `SMALL_MAX_PAYLOAD`."""
    config = tmp_path / "small.conf"
    config.write_text(f"max_payload: {SMALL_MAX_PAYLOAD}\n")
    server = EmbeddedServer(tmp_path / "small-nats", config_file=config)
    await asyncio.to_thread(server.start)
    settings = make_settings(server.url, tmp_path, max_request_bytes=SMALL_MAX_PAYLOAD)
    nc = await connect(settings, name="test-provision")
    await provision(nc.jetstream(), settings)
    await nc.close()
    try:
        yield settings.replace(max_request_bytes=256 * 1024)
    finally:
        await asyncio.to_thread(server.stop)


SERVER_LIMIT = re.compile(
    r"run request is (\d+) bytes, above the limit of 7168 bytes: the NATS "
    r"server's max_payload \(8192 bytes\) less 1024 bytes for headers; send a "
    r"prompt_file instead of a long prompt_text"
)


async def test_server_max_payload_limit(
    small_payload: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = small_payload
    async with running_pool(settings, runners=1), PoolClient(settings) as client:
        # Under max_payload on its own, over it with the headers: nats-py would
        # send it and the server would close the client's connection.
        near = await client.run("near", prompt_text="x" * 8000, adapter="echo")
        still_connected = client.connected
        fits = await client.run("fits", prompt_text="x" * 6000, adapter="echo")
    match = SERVER_LIMIT.fullmatch(_message(near))
    assert near.status == Status.INVALID_REQUEST
    assert match is not None
    assert 8000 < int(match.group(1)) < SMALL_MAX_PAYLOAD
    assert still_connected
    assert fits.status == Status.OK
    assert (
        "max_request_bytes=262144 is above the server's max_payload=8192; "
        "requests are held to the server's limit"
    ) in caplog.messages


async def test_prompt_file_too_large(settings: Settings, nc: NATS) -> None:
    limited = settings.replace(max_prompt_file_bytes=1000)
    prompt = Path(settings.workspace_roots[0]) / "prompt.txt"
    prompt.write_text("x" * 1001)
    async with running_pool(limited, runners=1), PoolClient(limited) as client:
        result = await client.run("file", prompt_file=str(prompt), adapter="echo")
        prompt.write_text("x" * 1000)
        fits = await client.run("file", prompt_file=str(prompt), adapter="echo")
    assert result.status == Status.INVALID_REQUEST
    assert _message(result) == (
        f"prompt_file {str(prompt)!r} is larger than the limit of 1000 bytes"
    )
    assert fits.status == Status.OK
