"""POOL_UNREACHABLE and POOL_BUSY when parts of the pool are missing or silent."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from pathlib import Path

import nats
import pytest

from bus.client import PoolClient
from bus.connection import connect
from bus.provision import provision
from bus.server import EmbeddedServer
from bus.settings import Settings
from bus.wire import RunnerState, RunResult, Status
from registry.registry import RunRegistry
from tests.conftest import make_settings
from tests.pool import running_pool, wait_until


async def provisioned(settings: Settings) -> None:
    nc = await connect(settings, name="test-provision")
    await provision(nc.jetstream(), settings)
    await nc.close()


async def test_stopped_server_is_unreachable_at_once(
    own_server: EmbeddedServer, tmp_path: Path
) -> None:
    settings = make_settings(own_server.url, tmp_path)
    await provisioned(settings)
    async with running_pool(settings, runners=1):
        async with PoolClient(settings) as client:
            own_server.kill()
            started = time.monotonic()
            result = await client.run("hello", prompt_text="hi", adapter="echo")
            elapsed = time.monotonic() - started
    assert result.status == Status.POOL_UNREACHABLE
    assert elapsed < settings.request_timeout + 0.5


async def test_client_started_without_server_is_unreachable(tmp_path: Path) -> None:
    settings = make_settings("nats://127.0.0.1:1", tmp_path, request_timeout=0.5)
    async with PoolClient(settings) as client:
        result = await client.run("hello", prompt_text="hi", adapter="echo")
    assert result.status == Status.POOL_UNREACHABLE
    assert "no connection to NATS at nats://127.0.0.1:1" in result.error.message


async def test_frozen_server_unreachable_after_request_timeout(
    own_server: EmbeddedServer, tmp_path: Path
) -> None:
    settings = make_settings(own_server.url, tmp_path, request_timeout=1.0)
    await provisioned(settings)
    async with running_pool(settings, runners=1):
        async with PoolClient(settings) as client:
            assert own_server.pid is not None
            os.kill(own_server.pid, signal.SIGSTOP)
            started = time.monotonic()
            result = await client.run("hello", prompt_text="hi", adapter="echo")
            elapsed = time.monotonic() - started
            os.kill(own_server.pid, signal.SIGCONT)
    assert result.status == Status.POOL_UNREACHABLE
    assert settings.request_timeout <= elapsed < settings.request_timeout * 3


async def test_unpicked_run_is_withdrawn_as_busy(
    settings: Settings, nc: nats.NATS
) -> None:
    # A heartbeat with no runner behind it: admission counts its slots, but
    # nobody pulls the run.
    registry = await RunRegistry.open(nc, settings)
    await registry.heartbeat(RunnerState(runner_id="ghost", slots=3))
    fast = settings.replace(pickup_timeout=0.5)
    async with PoolClient(fast) as client:
        result = await client.run("hello", prompt_text="hi", adapter="echo")
    record = await registry.get_run(result.run_id)
    info = await nc.jetstream().stream_info(settings.runs_stream)
    assert result.status == Status.POOL_BUSY
    assert "no runner started the run within 0.5 s" in result.error.message
    assert record is not None and record.state == "withdrawn"
    assert info.state.messages == 0


async def test_repeated_run_id_returns_first_result(
    settings: Settings, nc: object
) -> None:
    async with (
        running_pool(settings, runners=1) as runners,
        PoolClient(settings) as client,
    ):
        first = await client.run(
            "once", prompt_text="a", adapter="echo", run_id="same-id"
        )
        second = await client.run(
            "once", prompt_text="b", adapter="echo", run_id="same-id"
        )
    assert first.status == Status.OK
    assert second.output == first.output == "echo (no model was called): a"
    assert runners[0].counters["OK"] == 1


async def test_invalid_request_never_published(
    settings: Settings, nc: nats.NATS
) -> None:
    async with running_pool(settings, runners=1), PoolClient(settings) as client:
        both = await client.run("x", prompt_text="a", prompt_file="/etc/hostname")
        bad_task = await client.run("has space", prompt_text="a", adapter="echo")
        escape = await client.run(
            "x", prompt_text="a", adapter="echo", cwd_mode="caller", caller_cwd="/etc"
        )
    info = await nc.jetstream().stream_info(settings.runs_stream)
    assert both.status == Status.INVALID_REQUEST
    assert "exactly one of prompt_text and prompt_file" in both.error.message
    assert bad_task.status == Status.INVALID_REQUEST
    assert "$.task" in bad_task.error.message
    assert escape.status == Status.INVALID_REQUEST
    assert "caller_cwd '/etc'" in escape.error.message
    assert "outside the workspace roots" in escape.error.message
    assert info.state.last_seq == 0


async def test_runner_stop_lets_runs_finish(settings: Settings, nc: object) -> None:
    async with (
        running_pool(settings, runners=1) as runners,
        PoolClient(settings) as client,
    ):
        runs = [
            asyncio.create_task(
                client.run(
                    "drain", prompt_text="x", adapter="echo", model_hint="delay=1"
                )
            )
            for _ in range(3)
        ]
        await wait_until(lambda: len(runners[0].running), lambda count: count == 3)
        await runners[0].stop()
        results = await asyncio.gather(*runs)
        capacity = await client.registry.live_capacity()
    assert [result.status for result in results] == [Status.OK] * 3
    assert capacity == 0


async def test_withdrawn_run_id_can_run_again(
    settings: Settings, nc: nats.NATS
) -> None:
    registry = await RunRegistry.open(nc, settings)
    await registry.heartbeat(RunnerState(runner_id="ghost", slots=3))
    fast = settings.replace(pickup_timeout=0.5)
    async with PoolClient(fast) as client:
        first = await client.run(
            "again", prompt_text="x", adapter="echo", run_id="again-1"
        )
        await registry.remove_runner("ghost")
        async with running_pool(settings, runners=1):
            second = await client.run(
                "again", prompt_text="x", adapter="echo", run_id="again-1"
            )
    assert first.status == Status.POOL_BUSY
    assert second.status == Status.OK
    assert second.run_id == "again-1"


async def _take_only_slot(
    holder: PoolClient, settings: Settings, nc: nats.NATS, delay_s: float
) -> asyncio.Task[RunResult]:
    """Start a run that keeps a 1-slot pool busy for `delay_s`; return its task."""
    running = asyncio.create_task(
        holder.run(
            "hold", prompt_text="x", adapter="echo", model_hint=f"delay={delay_s:g}"
        )
    )
    await wait_until(
        lambda: nc.jetstream().stream_info(settings.runs_stream),
        lambda info: info.state.messages == 1,
    )
    return running


async def test_wait_for_slot_takes_freed_slot(
    settings: Settings, nc: nats.NATS
) -> None:
    async with (
        running_pool(settings, runners=1, slots=1),
        PoolClient(settings) as client,
    ):
        holder = await _take_only_slot(client, settings, nc, 0.5)
        waited = await client.run(
            "wait", prompt_text="y", adapter="echo", wait_for_slot_s=10
        )
        finished = await holder
    assert finished.status == Status.OK
    assert waited.status == Status.OK
    assert waited.output == "echo (no model was called): y"
    assert waited.started_at >= finished.finished_at


async def test_wait_for_slot_sees_other_clients(
    settings: Settings, nc: nats.NATS
) -> None:
    # The holder's result reaches another client, so only the stream read
    # every SLOT_POLL_S shows the waiting client that the slot is free.
    async with (
        running_pool(settings, runners=1, slots=1),
        PoolClient(settings) as other,
        PoolClient(settings) as client,
    ):
        holder = await _take_only_slot(other, settings, nc, 0.5)
        waited = await client.run(
            "wait", prompt_text="y", adapter="echo", wait_for_slot_s=10
        )
        finished = await holder
    assert waited.status == Status.OK
    assert waited.started_at >= finished.finished_at


async def test_wait_for_slot_ends_busy(settings: Settings, nc: nats.NATS) -> None:
    async with (
        running_pool(settings, runners=1, slots=1),
        PoolClient(settings) as client,
    ):
        holder = await _take_only_slot(client, settings, nc, 2)
        busy = await client.run(
            "wait", prompt_text="y", adapter="echo", wait_for_slot_s=0.3
        )
        info = await nc.jetstream().stream_info(settings.runs_stream)
        finished = await holder
    assert busy.status == Status.POOL_BUSY
    assert busy.error is not None
    assert busy.error.message.startswith("all 1 live slots are busy")
    assert info.state.messages == 1
    assert finished.status == Status.OK
    # Waiting runs that gave up leave nothing queued behind them.
    assert client._slot_waiters == collections.deque()


@pytest.mark.parametrize("wait", [-1.0, 1e9])
async def test_wait_for_slot_out_of_range(
    settings: Settings, nc: nats.NATS, wait: float
) -> None:
    async with PoolClient(settings) as client:
        result = await client.run(
            "wait", prompt_text="y", adapter="echo", wait_for_slot_s=wait
        )
    assert result.status == Status.INVALID_REQUEST
    assert result.error is not None
    assert result.error.message == (
        f"wait_for_slot_s {wait:g} is invalid: give 0 to {settings.max_timeout_s:g} s"
    )


async def test_many_slot_waiters_all_run(settings: Settings, nc: nats.NATS) -> None:
    # Far more waiters than slots, with runs shorter than the stream poll:
    # wakes and poll timeouts interleave, and every call must return OK.
    async with (
        running_pool(settings, runners=3, slots=3),
        PoolClient(settings) as client,
    ):
        results = await asyncio.gather(
            *(
                client.run(
                    "many", prompt_text=str(index), adapter="echo", wait_for_slot_s=60
                )
                for index in range(400)
            )
        )
    assert [result.status for result in results] == [Status.OK] * 400
    assert client._slot_waiters == collections.deque()


async def test_resubmit_after_result_finds_slot(
    settings: Settings, nc: nats.NATS
) -> None:
    # Each lane submits again the moment its result arrives, on a pool with
    # exactly one slot per lane: the slot it just freed must be free.
    async with (
        running_pool(settings, runners=1, slots=3),
        PoolClient(settings) as client,
    ):

        async def lane() -> list[Status]:
            return [
                (await client.run("again", prompt_text="x", adapter="echo")).status
                for _ in range(700)
            ]

        lanes = await asyncio.gather(lane(), lane(), lane())
    statuses = [status for statuses in lanes for status in statuses]
    assert statuses.count(Status.POOL_BUSY) == 0
    assert statuses.count(Status.OK) == 2100
