"""The pool on a 3-node cluster with R3 streams, across a stream leader kill."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.client import PoolClient
from bus.connection import connect
from bus.errors import PoolError
from bus.provision import provision
from bus.settings import Settings
from bus.wire import RunResult, Status
from tests.cluster import Cluster
from tests.conftest import make_settings
from tests.pool import running_pool, wait_until

# A new stream leader takes over within about 6 s; retries stop after this.
RETRY_LIMIT_S = 60.0
LOAD_RUNS = 60


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path / "cluster") as started:
        yield started


async def cluster_settings(cluster: Cluster, tmp_path: Path) -> Settings:
    settings = make_settings(cluster.url, tmp_path, replicas=3, ack_wait_s=3.0)
    deadline = time.monotonic() + 30
    while True:
        # JetStream needs a meta leader before it accepts stream creates.
        nc = await connect(settings, name="cluster-provision")
        try:
            await provision(nc.jetstream(), settings)
            return settings
        except Exception:
            if time.monotonic() > deadline:
                raise
        finally:
            await nc.close()
        await asyncio.sleep(0.2)


async def run_retrying(client: PoolClient, index: int) -> RunResult:
    """Retry with the same run_id, so a publish that was stored is not run twice."""
    deadline = time.monotonic() + RETRY_LIMIT_S
    while True:
        result = await client.run(
            "load",
            prompt_text=f"run {index}",
            adapter="echo",
            model_hint="delay=0.3",
            run_id=f"load-{index}",
            timeout_s=30,
        )
        retry = result.status in (Status.POOL_BUSY, Status.POOL_UNREACHABLE)
        if not retry or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


@pytest.mark.timeout(180)
async def test_cluster_admission_and_echo(cluster: Cluster, tmp_path: Path) -> None:
    settings = await cluster_settings(cluster, tmp_path)
    async with running_pool(settings, runners=3), PoolClient(settings) as client:
        one = await client.run("hello", prompt_text="hi", adapter="echo")
        slow = [
            asyncio.create_task(
                client.run(
                    "slow", prompt_text="x", adapter="echo", model_hint="delay=2"
                )
            )
            for _ in range(9)
        ]
        await wait_until(client.status, lambda status: status.in_stream == 9)
        tenth = await client.run("slow", prompt_text="x", adapter="echo")
        results = await asyncio.gather(*slow)
    assert one.status == Status.OK
    assert tenth.status == Status.POOL_BUSY
    assert [result.status for result in results] == [Status.OK] * 9


@pytest.mark.timeout(240)
async def test_leader_kill_loses_no_run(cluster: Cluster, tmp_path: Path) -> None:
    settings = await cluster_settings(cluster, tmp_path)
    async with running_pool(settings, runners=3), PoolClient(settings) as client:
        load = asyncio.gather(
            *(run_retrying(client, index) for index in range(LOAD_RUNS))
        )
        await asyncio.sleep(1.0)
        assert client._js is not None
        info = await client._js.stream_info(settings.runs_stream)
        leader = info.cluster.leader if info.cluster else None
        assert leader in cluster.servers
        await asyncio.to_thread(cluster.kill, leader)
        results = await load

        async def settled() -> bool:
            try:
                status = await client.status()
            except PoolError:
                return False
            return status.in_stream == 0 and status.slots_busy == 0

        await wait_until(settled, bool, 60)
        records = await client.registry.runs()
        new_info = await client._js.stream_info(settings.runs_stream)
    finals = [record for record in records if record.state == "final"]
    assert [result.status for result in results] == [Status.OK] * LOAD_RUNS
    assert sorted(record.run_id for record in finals) == sorted(
        f"load-{index}" for index in range(LOAD_RUNS)
    )
    assert new_info.cluster is not None and new_info.cluster.leader != leader
