"""Runs survive a nats-server restart and a runner's SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from bus.client import PoolClient
from bus.connection import connect
from bus.provision import provision
from bus.server import EmbeddedServer
from bus.settings import Settings
from bus.wire import Status
from tests.conftest import make_settings
from tests.pool import RunnerProcess, running_pool, wait_until


async def provisioned(settings: Settings) -> None:
    nc = await connect(settings, name="test-provision")
    await provision(nc.jetstream(), settings)
    await nc.close()


@pytest.mark.timeout(120)
async def test_runs_survive_server_restart(
    own_server: EmbeddedServer, tmp_path: Path
) -> None:
    settings = make_settings(own_server.url, tmp_path, ack_wait_s=2.0)
    await provisioned(settings)
    async with (
        running_pool(settings, runners=3) as runners,
        PoolClient(settings) as client,
    ):
        runs = [
            asyncio.create_task(
                client.run(
                    "restart", prompt_text="x", adapter="echo", model_hint="delay=2"
                )
            )
            for _ in range(6)
        ]
        await wait_until(
            lambda: sum(len(runner.running) for runner in runners),
            lambda count: count == 6,
        )
        await asyncio.to_thread(own_server.stop)
        await wait_until(
            lambda: [r.ready for r in runners], lambda ready: not any(ready)
        )
        await asyncio.to_thread(own_server.start)
        results = await asyncio.gather(*runs)
        await wait_until(lambda: [r.ready for r in runners], all)
        await wait_until(client.registry.live_capacity, lambda total: total == 9)
        after = await client.run("restart", prompt_text="after", adapter="echo")
        status = await client.status()
    assert [result.status for result in results] == [Status.OK] * 6
    assert after.status == Status.OK
    assert status.in_stream == 0


@pytest.mark.timeout(120)
async def test_sigterm_lets_running_runs_finish(
    settings: Settings, nc: object, tmp_path: Path
) -> None:
    processes = [
        RunnerProcess(settings, f"proc-{index}", tmp_path) for index in range(3)
    ]
    for process in processes:
        process.start()
    try:
        async with PoolClient(settings) as client:
            await wait_until(client.registry.live_capacity, lambda total: total == 9)
            runs = [
                asyncio.create_task(
                    client.run(
                        "drain", prompt_text="x", adapter="echo", model_hint="delay=3"
                    )
                )
                for _ in range(9)
            ]
            await wait_until(client.status, lambda status: status.slots_busy == 9)
            processes[0].signal(signal.SIGTERM)
            results = await asyncio.gather(*runs)
            code = await asyncio.to_thread(processes[0].wait, 30)
            status = await client.status()
    finally:
        for process in processes:
            process.stop()
    by_runner = [result.runner_id for result in results]
    assert [result.status for result in results] == [Status.OK] * 9
    assert by_runner.count("proc-0") == 3
    assert code == 0
    assert "runner stopped runner=proc-0" in processes[0].log()
    assert [state.runner_id for state in status.runners] == ["proc-1", "proc-2"]
    assert status.in_stream == 0
