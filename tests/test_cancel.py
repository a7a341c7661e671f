"""Cancelling queued, running and finished runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats

from bus.client import PoolClient
from bus.settings import Settings
from bus.wire import RunnerState, Status
from registry.registry import RunRegistry
from tests.pool import running_pool, wait_until


async def test_cancel_running_run(settings: Settings, nc: nats.NATS) -> None:
    work = Path(settings.work_root)
    async with (
        running_pool(settings, runners=1) as runners,
        PoolClient(settings) as client,
    ):
        waiting = asyncio.create_task(
            client.run("long", prompt_text="x", adapter="echo", model_hint="delay=30")
        )
        await wait_until(lambda: list(runners[0].running), lambda runs: len(runs) == 1)
        run_id = next(iter(runners[0].running))
        cancelled = await client.cancel(run_id)
        seen_by_caller = await waiting
        info = await nc.jetstream().stream_info(settings.runs_stream)
    assert cancelled.status == Status.CANCELLED
    assert cancelled.error.message == "cancelled by request"
    assert cancelled.runner_id == "runner-0"
    assert seen_by_caller.status == Status.CANCELLED
    assert seen_by_caller.run_id == run_id
    assert list(work.glob("run-*")) == []
    assert info.state.messages == 0


async def test_cancel_queued_run(settings: Settings, nc: nats.NATS) -> None:
    registry = await RunRegistry.open(nc, settings)
    await registry.heartbeat(RunnerState(runner_id="ghost", slots=3))
    slow_pickup = settings.replace(pickup_timeout=1.0)
    async with PoolClient(slow_pickup) as client:
        waiting = asyncio.create_task(
            client.run("queued", prompt_text="x", adapter="echo", run_id="queued-1")
        )
        await wait_until(
            lambda: nc.jetstream().stream_info(settings.runs_stream),
            lambda info: info.state.messages == 1,
        )
        cancelled = await client.cancel("queued-1")
        seen_by_caller = await waiting
    info = await nc.jetstream().stream_info(settings.runs_stream)
    assert cancelled.status == Status.CANCELLED
    assert cancelled.error.message == "cancelled before a runner started it"
    assert seen_by_caller.status == Status.CANCELLED
    assert info.state.messages == 0


async def test_cancel_finished_run_returns_result(
    settings: Settings, nc: object
) -> None:
    async with running_pool(settings, runners=1), PoolClient(settings) as client:
        done = await client.run("quick", prompt_text="x", adapter="echo")
        again = await client.cancel(done.run_id)
    assert again.status == Status.OK
    assert again.output == done.output


async def test_withdraw_never_deletes_other_run(
    settings: Settings, nc: nats.NATS
) -> None:
    import json

    from registry.writes import RegistryWriter

    js = nc.jetstream()
    async with running_pool(settings, runners=1, slots=1) as runners:
        async with PoolClient(settings) as client:
            holder = asyncio.create_task(
                client.run(
                    "hold", prompt_text="x", adapter="echo", model_hint="delay=3"
                )
            )
            await wait_until(lambda: len(runners[0].running), lambda n: n == 1)
            victim = {
                "task": "victim",
                "prompt_text": "x",
                "adapter": "echo",
                "run_id": "victim-1",
            }
            ack = await js.publish(
                f"{settings.subject_prefix}.run.victim", json.dumps(victim).encode()
            )
            writer = RegistryWriter(nc, js, client.registry, settings)
            record = await writer.withdraw("attacker-1", stream_seq=ack.seq)
            still_there = await js.get_msg(settings.runs_stream, seq=ack.seq)
            await holder
            victim_result = await wait_until(
                lambda: client.result("victim-1"), lambda result: result is not None
            )
    assert record.state == "withdrawn"
    assert record.run_id == "attacker-1"
    assert still_there.seq == ack.seq
    assert victim_result.status == Status.OK
