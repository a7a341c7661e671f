"""Bad payloads on pool.run.* are answered INVALID_REQUEST and never stall a runner."""

from __future__ import annotations

import asyncio
import json
import os
import random

import nats
import pytest
from nats.js.errors import APIError

from bus.client import PoolClient
from bus.settings import Settings
from bus.wire import Status, decode_result
from tests.pool import running_pool, wait_until

# CI publishes this many; SUPERPOOL_FUZZ_PAYLOADS=10000 gives the long run.
FUZZ_PAYLOADS = int(os.environ.get("SUPERPOOL_FUZZ_PAYLOADS", "2000"))
FUZZ_SEED = int(os.environ.get("SUPERPOOL_FUZZ_SEED", "20261203"))
# One valid run goes in after every this many bad payloads.
VALID_EVERY = 20
ERR_MAX_MSGS = 10077


def bad_payload(rng: random.Random, index: int, limit: int) -> tuple[bytes, bool]:
    """Return a payload that breaks a rule, and whether the stream should store it."""
    run_id = f"fuzz-{index}"
    base = {"task": "fuzz", "prompt_text": "x", "adapter": "echo", "run_id": run_id}
    kind = rng.randrange(12)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 300)), True
    if kind == 1:
        return json.dumps(rng.choice([[], "text", 5, None, True, {}])).encode(), True
    if kind == 2:
        return json.dumps(
            base | {"task": rng.choice([5, None, "", "a b", "x" * 65])}
        ).encode(), True
    if kind == 3:
        return json.dumps(
            base | {"prompt_text": rng.choice([5, [], {"a": 1}])}
        ).encode(), True
    if kind == 4:
        return json.dumps(base | {"prompt_file": "also.txt"}).encode(), True
    if kind == 5:
        return json.dumps(
            base | {"adapter": rng.choice(["gpt", "", 7, "ECHO"])}
        ).encode(), True
    if kind == 6:
        return json.dumps(
            base | {"timeout_s": rng.choice([0, -1, "soon", [1]])}
        ).encode(), True
    if kind == 7:
        return json.dumps(
            base | {"cwd_mode": "caller", "caller_cwd": "/etc"}
        ).encode(), True
    if kind == 8:
        return json.dumps(base | {"model_hint": "delay=forever"}).encode(), True
    if kind == 9:
        return json.dumps(base).encode("utf-16"), True
    if kind == 10:
        return (
            b'{"task": "fuzz", "prompt_text": "\xff\xfe", "run_id": "'
            + run_id.encode()
            + b'"}',
            True,
        )
    # Larger than the stream's max_msg_size: the stream rejects it.
    return json.dumps(base | {"prompt_text": "y" * (limit + 10)}).encode(), False


async def publish_until_stored(
    js: object, subject: str, data: bytes, msg_id: str
) -> bool:
    """Publish, waiting while the stream is full; False when the stream rejects it."""
    while True:
        try:
            await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})  # type: ignore[attr-defined]
            return True
        except APIError as exc:
            if exc.err_code != ERR_MAX_MSGS:
                return False
        await asyncio.sleep(0.002)


@pytest.mark.timeout(600)
async def test_fuzz_payloads_invalid_and_runners_stay_up(
    settings: Settings, nc: nats.NATS
) -> None:
    rng = random.Random(FUZZ_SEED)
    js = nc.jetstream()
    answered: dict[str, str] = {}

    async def on_result(msg: nats.aio.msg.Msg) -> None:
        result = decode_result(msg.data)
        answered[result.run_id] = result.status

    await nc.subscribe(f"{settings.subject_prefix}.result.>", cb=on_result)
    expected: set[str] = set()
    valid: list[asyncio.Task] = []
    async with (
        running_pool(settings, runners=3) as runners,
        PoolClient(settings) as client,
    ):
        for index in range(FUZZ_PAYLOADS):
            data, storable = bad_payload(rng, index, settings.max_request_bytes)
            stored = await publish_until_stored(
                js, f"{settings.subject_prefix}.run.fuzz", data, f"fuzz-{index}"
            )
            assert stored == storable, f"payload {index} (seed {FUZZ_SEED})"
            if stored:
                expected.add(f"fuzz-{index}")
            if index % VALID_EVERY == 0:
                valid.append(asyncio.create_task(retry_busy(client, index)))
        valid_results = await asyncio.gather(*valid)
        await wait_until(
            lambda: expected - set(answered), lambda missing: not missing, 60
        )
        capacity = await client.registry.live_capacity()
        status = await client.status()
        consumer = await js.consumer_info(settings.runs_stream, settings.consumer)
    wrong = {
        run_id: answered[run_id]
        for run_id in expected
        if answered[run_id] != "INVALID_REQUEST"
    }
    assert wrong == {}, f"seed {FUZZ_SEED}"
    assert [result.status for result in valid_results] == [Status.OK] * len(valid)
    assert capacity == 9
    assert status.in_stream == 0
    assert consumer.num_redelivered == 0
    assert sum(runner.counters["INVALID_REQUEST"] for runner in runners) == len(
        expected
    )


async def retry_busy(client: PoolClient, index: int) -> object:
    while True:
        result = await client.run("valid", prompt_text=f"valid {index}", adapter="echo")
        if result.status != Status.POOL_BUSY:
            return result
        await asyncio.sleep(0.01)
