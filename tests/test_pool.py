"""The whole path of a run through a real nats-server and in-process runners."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from bus.client import PoolClient
from bus.settings import Settings
from bus.wire import RunResult, Status, decode_result
from tests.pool import running_pool, wait_until

SLOW = "delay=2"


async def stream_messages(settings: Settings) -> int:
    nc = await nats.connect(settings.nats_url)
    try:
        info = await nc.jetstream().stream_info(settings.runs_stream)
        return info.state.messages
    finally:
        await nc.close()


async def test_echo_run_returns_ok(settings: Settings, nc: object) -> None:
    async with running_pool(settings, runners=1), PoolClient(settings) as client:
        result = await client.run("hello", prompt_text="hi there", adapter="echo")
    assert result.status == Status.OK
    assert result.output == "echo (no model was called): hi there"
    assert result.model == "echo"
    assert result.runner_id == "runner-0"
    assert result.attempt == 1
    assert len(result.run_id) == 32


async def test_tenth_run_is_pool_busy(settings: Settings, nc: object) -> None:
    async with (
        running_pool(settings, runners=3) as runners,
        PoolClient(settings) as client,
    ):
        first = [
            asyncio.create_task(
                client.run("slow", prompt_text="x", adapter="echo", model_hint=SLOW)
            )
            for _ in range(9)
        ]
        await wait_until(lambda: stream_messages(settings), lambda count: count == 9)
        tenth = await client.run(
            "slow", prompt_text="x", adapter="echo", model_hint=SLOW
        )
        results = await asyncio.gather(*first)
        status = await client.status()
    assert tenth.status == Status.POOL_BUSY
    assert tenth.retry_after_s == 0.5
    assert [r.status for r in results] == [Status.OK] * 9
    assert sum(runner.max_held for runner in runners) == 9
    await wait_until(lambda: stream_messages(settings), lambda count: count == 0)
    assert status.slots_total == 9
    await wait_until(lambda: client_busy(settings), lambda busy: busy == 0)


async def client_busy(settings: Settings) -> int:
    async with PoolClient(settings) as client:
        return (await client.status()).slots_busy


async def test_one_runner_fourth_run_busy(settings: Settings, nc: object) -> None:
    async with running_pool(settings, runners=1), PoolClient(settings) as client:
        first = [
            asyncio.create_task(
                client.run("slow", prompt_text="x", adapter="echo", model_hint=SLOW)
            )
            for _ in range(3)
        ]
        await wait_until(lambda: stream_messages(settings), lambda count: count == 3)
        fourth = await client.run("slow", prompt_text="x", adapter="echo")
        results = await asyncio.gather(*first)
    assert fourth.status == Status.POOL_BUSY
    assert [r.status for r in results] == [Status.OK] * 3


async def test_racing_clients_admit_exactly_nine(
    settings: Settings, nc: object
) -> None:
    async with running_pool(settings, runners=3):
        async with PoolClient(settings) as one, PoolClient(settings) as two:
            calls = [
                (one if index % 2 else two).run(
                    "race", prompt_text="x", adapter="echo", model_hint=SLOW
                )
                for index in range(20)
            ]
            results = await asyncio.gather(*calls)
    statuses = [result.status for result in results]
    assert statuses.count(Status.OK) == 9
    assert statuses.count(Status.POOL_BUSY) == 11


async def test_no_runner_is_unreachable(settings: Settings, nc: object) -> None:
    async with PoolClient(settings) as client:
        result = await client.run("hello", prompt_text="hi", adapter="echo")
    assert result.status == Status.POOL_UNREACHABLE
    assert "no runner with a fresh heartbeat" in result.error.message
    assert await stream_messages(settings) == 0


async def test_runner_never_holds_more_than_slots(
    settings: Settings, nc: object
) -> None:
    async with (
        running_pool(settings, runners=3) as runners,
        PoolClient(settings) as client,
    ):
        results: list[RunResult] = []
        for _ in range(3):
            batch = [
                client.run(
                    "burst", prompt_text="x", adapter="echo", model_hint="delay=0.2"
                )
                for _ in range(10)
            ]
            results += await asyncio.gather(*batch)
    assert len(results) == 30
    assert max(runner.max_held for runner in runners) <= 3
    statuses = [result.status for result in results]
    assert statuses.count(Status.OK) == 27
    assert statuses.count(Status.POOL_BUSY) == 3


async def test_direct_publish_is_run(settings: Settings, nc: nats.NATS) -> None:
    payload = {"task": "direct", "prompt_text": "from nats pub", "adapter": "echo"}
    async with running_pool(settings, runners=1):
        js = nc.jetstream()
        sub = await js.subscribe(
            f"{settings.subject_prefix}.result.>", ordered_consumer=True
        )
        ack = await js.publish(
            f"{settings.subject_prefix}.run.direct",
            json.dumps(payload).encode(),
            headers={"Nats-Msg-Id": "direct-1"},
        )
        msg = await sub.next_msg(timeout=10)
    result = decode_result(msg.data)
    assert ack.seq == 1
    assert msg.subject == f"{settings.subject_prefix}.result.direct-1"
    assert result.status == Status.OK
    assert result.output == "echo (no model was called): from nats pub"


async def test_malformed_payload_invalid_not_redelivered(
    settings: Settings, nc: nats.NATS
) -> None:
    async with running_pool(settings, runners=1) as runners:
        js = nc.jetstream()
        sub = await js.subscribe(
            f"{settings.subject_prefix}.result.>", ordered_consumer=True
        )
        await js.publish(
            f"{settings.subject_prefix}.run.bad",
            b"{not json",
            headers={"Nats-Msg-Id": "bad-1"},
        )
        msg = await sub.next_msg(timeout=10)
        await wait_until(lambda: stream_messages(settings), lambda count: count == 0)
        info = await js.consumer_info(settings.runs_stream, settings.consumer)
    result = decode_result(msg.data)
    assert result.status == Status.INVALID_REQUEST
    assert result.run_id == "bad-1"
    assert "JSON is malformed" in result.error.message
    assert info.num_redelivered == 0
    assert runners[0].counters["INVALID_REQUEST"] == 1


async def test_unstored_result_logged_and_kept(
    settings: Settings, nc: nats.NATS, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator deleted the results stream: the run record still keeps
    # the result, and the runner logs that the stream did not store it.
    await nc.jetstream().delete_stream(settings.results_stream)
    async with (
        running_pool(settings, runners=1) as runners,
        PoolClient(settings) as client,
    ):
        result = await client.run("lost", prompt_text="x", adapter="echo")
        await wait_until(
            lambda: runners[0].counters["results_not_stored"],
            lambda count: count == 1,
        )
        stored = await client.result(result.run_id)
    warnings = [
        record.getMessage()
        for record in caplog.records
        if "not stored on the results stream" in record.getMessage()
    ]
    assert result.status == Status.OK
    assert stored == result
    assert len(warnings) == 1
    assert f"run_id={result.run_id}" in warnings[0]
    assert f"no stream captures {settings.subject_prefix}.result." in warnings[0]


async def test_minted_run_id_skips_earlier_run_read(
    settings: Settings, nc: nats.NATS
) -> None:
    async with (
        running_pool(settings, runners=1),
        PoolClient(settings) as client,
    ):
        reads: list[str] = []
        run_entry = client.registry.run_entry

        async def counted(run_id: str) -> object:
            reads.append(run_id)
            return await run_entry(run_id)

        client.registry.run_entry = counted  # type: ignore[method-assign]
        run_id = client.new_run_id()
        first = await client.run("mint", prompt_text="x", adapter="echo", run_id=run_id)
        again = await client.run("mint", prompt_text="y", adapter="echo", run_id=run_id)
    assert first.status == Status.OK
    assert first.run_id == run_id
    # The second run with the same run_id is checked and returns the first.
    assert reads == [run_id]
    assert again == first


async def test_close_ends_runs_in_flight(settings: Settings, nc: nats.NATS) -> None:
    async with running_pool(settings, runners=1, slots=1):
        client = PoolClient(settings)
        await client.connect()
        running = asyncio.create_task(
            client.run("close", prompt_text="x", adapter="echo", model_hint="delay=1")
        )
        waiting = asyncio.create_task(
            client.run("close", prompt_text="y", adapter="echo", wait_for_slot_s=30)
        )
        await wait_until(
            lambda: nc.jetstream().stream_info(settings.runs_stream),
            lambda info: info.state.messages == 1,
        )
        await client.close()
        # Bounded, so that a hang fails the test instead of stalling it.
        ended, waited = await asyncio.wait_for(
            asyncio.gather(running, waiting), timeout=5
        )
    assert ended.status == Status.POOL_UNREACHABLE
    assert ended.error is not None
    assert (
        "the client was closed before the run's result arrived" in ended.error.message
    )
    assert waited.status == Status.POOL_UNREACHABLE
    assert waited.error is not None
    assert "the client was closed" in waited.error.message


async def test_forgotten_pull_requests_never_overfill(
    settings: Settings, nc: nats.NATS
) -> None:
    # After a reconnect to a server that stayed up, the old pull requests
    # may still be served. The runner must still hold at most its slots.
    js = nc.jetstream()
    async with running_pool(settings, runners=1, slots=3) as runners:
        runner = runners[0]
        await wait_until(lambda: runner._puller.requested, lambda count: count == 3)  # type: ignore[union-attr]
        await runner._puller.forget_all()  # type: ignore[union-attr]
        await wait_until(lambda: runner._puller.requested, lambda count: count == 3)  # type: ignore[union-attr]
        for index in range(6):
            payload = {
                "task": "pull",
                "prompt_text": "x",
                "adapter": "echo",
                "run_id": f"pull-{index}",
                "model_hint": "delay=0.5",
            }
            await js.publish(
                f"{settings.subject_prefix}.run.pull", json.dumps(payload).encode()
            )
        await wait_until(
            lambda: js.stream_info(settings.runs_stream),
            lambda info: info.state.messages == 0,
            20,
        )
    assert runner.max_held == 3
    assert runner.counters["OK"] == 6
