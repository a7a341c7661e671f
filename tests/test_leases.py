"""Leases, fencing, redelivery and max_deliver exhaustion."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from bus.client import PoolClient
from bus.provision import provision
from bus.server import EmbeddedServer
from bus.settings import Settings
from bus.wire import RunRecord, RunResult, Status, decode_result, now
from registry.registry import LeaseLostError, RunRegistry
from runner.runner import Runner
from tests.conftest import make_settings
from tests.pool import child_environ, running_pool, wait_until


async def test_stale_owner_cannot_finish(settings: Settings, nc: nats.NATS) -> None:
    registry = await RunRegistry.open(nc, settings)
    first = await registry.claim(RunRecord(run_id="r1", state="running", runner_id="a"))
    # Runner "a" never wrote a heartbeat, so it counts as lost.
    second = await registry.claim(
        RunRecord(run_id="r1", state="running", runner_id="b", attempt=2)
    )
    late = RunResult(run_id="r1", status=Status.OK, output="from a")
    with pytest.raises(LeaseLostError) as caught:
        await registry.finish("r1", "a", first.revision, late)
    assert first.outcome == "claimed"
    assert second.outcome == "claimed"
    assert second.previous is not None and second.previous.runner_id == "a"
    assert caught.value.run_id == "r1"
    assert (await registry.get_run("r1")).runner_id == "b"  # type: ignore[union-attr]


async def test_live_owner_keeps_run(settings: Settings, nc: nats.NATS) -> None:
    async with running_pool(settings, runners=1):
        registry = await RunRegistry.open(nc, settings)
        # Just claimed: runner-0's heartbeat need not list the run yet.
        await registry.claim(
            RunRecord(
                run_id="r2", state="running", runner_id="runner-0", updated_at=now()
            )
        )
        other = await registry.claim(
            RunRecord(run_id="r2", state="running", runner_id="b")
        )
    assert other.outcome == "owned"
    assert other.record.runner_id == "runner-0"


async def test_final_record_answers_redelivery(
    settings: Settings, nc: nats.NATS
) -> None:
    # A runner that died between writing the result and acking leaves this.
    registry = await RunRegistry.open(nc, settings)
    stored = RunResult(run_id="done-1", status=Status.OK, output="stored answer")
    await registry.finish_unclaimed(stored)
    async with (
        running_pool(settings, runners=1) as runners,
        PoolClient(settings) as client,
    ):
        result = await client.run(
            "again", prompt_text="x", adapter="echo", run_id="done-1"
        )
        info = await nc.jetstream().stream_info(settings.runs_stream)
    assert result.output == "stored answer"
    assert runners[0].counters["OK"] == 0
    assert info.state.messages == 0


async def test_long_run_not_redelivered(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    settings = make_settings(nats_server.url, tmp_path, ack_wait_s=1.0)
    connection = await nats.connect(settings.nats_url)
    await provision(connection.jetstream(), settings)
    async with running_pool(settings, runners=1), PoolClient(settings) as client:
        result = await client.run(
            "long", prompt_text="x", adapter="echo", model_hint="delay=4"
        )
        consumer = await connection.jetstream().consumer_info(
            settings.runs_stream, settings.consumer
        )
    await connection.close()
    assert result.status == Status.OK
    assert result.attempt == 1
    assert consumer.num_redelivered == 0


async def test_exhausted_message_failed_by_advisory(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    settings = make_settings(
        nats_server.url,
        tmp_path,
        ack_wait_s=1.0,
        max_deliver=2,
    )
    connection = await nats.connect(settings.nats_url)
    js = connection.jetstream()
    await provision(js, settings)
    results = await connection.subscribe(f"{settings.subject_prefix}.result.lost-1")
    async with running_pool(settings, runners=1, slots=1) as runners:
        async with PoolClient(settings) as client:
            holder = asyncio.create_task(
                client.run(
                    "hold", prompt_text="x", adapter="echo", model_hint="delay=6"
                )
            )
            await wait_until(lambda: len(runners[0].running), lambda count: count == 1)
            payload = {
                "task": "lost",
                "prompt_text": "x",
                "adapter": "echo",
                "run_id": "lost-1",
            }
            await js.publish(
                f"{settings.subject_prefix}.run.lost", json.dumps(payload).encode()
            )
            # A runner that takes the message and dies before claiming it, twice.
            puller = await js.pull_subscribe_bind(
                settings.consumer, settings.runs_stream
            )
            deliveries = []
            for _ in range(2):
                taken = await puller.fetch(1, timeout=5)
                deliveries.append(taken[0].metadata.num_delivered)
            message = await results.next_msg(timeout=10)
            held = await holder
        info = await js.stream_info(settings.runs_stream)
    await connection.close()
    result = decode_result(message.data)
    assert result.status == Status.RUN_FAILED
    assert result.error is not None
    assert result.error.message == "runner lost 2 times; the run was not started again"
    assert deliveries == [1, 2]
    assert held.status == Status.OK
    assert info.state.messages == 0


@pytest.mark.timeout(90)
async def test_frozen_runner_loses_lease(settings: Settings, nc: nats.NATS) -> None:
    """A runner frozen past its heartbeat TTL wakes up unable to answer or ack."""
    frozen_settings = settings.replace(ack_wait_s=2.0)
    environ = child_environ(frozen_settings)
    log = Path(frozen_settings.work_root).parent / "frozen.log"
    with log.open("w") as log_file:
        frozen = subprocess.Popen(  # noqa: ASYNC220 - a child runner to freeze
            [
                sys.executable,
                "-m",
                "superpool.cli",
                "runner",
                "--runner-id",
                "frozen",
                "--slots",
                "1",
            ],
            env=environ,
            stderr=log_file,
            stdout=subprocess.DEVNULL,
        )
        try:
            async with PoolClient(frozen_settings) as client:
                await wait_until(
                    client.registry.live_capacity, lambda total: total == 1
                )
                results = await nc.subscribe(
                    f"{settings.subject_prefix}.result.fenced-1"
                )
                waiting = asyncio.create_task(
                    client.run(
                        "fenced",
                        prompt_text="x",
                        adapter="echo",
                        model_hint="delay=3",
                        run_id="fenced-1",
                    )
                )
                registry = client.registry
                await wait_until(
                    lambda: registry.get_run("fenced-1"),
                    lambda record: record is not None,
                )
                os.kill(frozen.pid, signal.SIGSTOP)
                async with Runner(frozen_settings, runner_id="rescuer", slots=1):
                    result = await waiting
                    os.kill(frozen.pid, signal.SIGCONT)
                    await wait_until(
                        lambda: log.read_text(),
                        lambda text: "lost the lease" in text,
                        limit=20,
                    )
                first = await results.next_msg(timeout=5)
                with pytest.raises(nats.errors.TimeoutError):
                    await results.next_msg(timeout=1)
                record = await registry.get_run("fenced-1")
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
            frozen.terminate()
            frozen.wait(30)
    assert result.status == Status.OK
    assert result.runner_id == "rescuer"
    assert decode_result(first.data).runner_id == "rescuer"
    assert record is not None and record.runner_id == "rescuer"
    assert "runner frozen lost the lease of run fenced-1" in log.read_text()


async def test_duplicate_message_keeps_running_result(
    settings: Settings, nc: nats.NATS
) -> None:
    # Another message with the run_id of a run in progress, under a new
    # Nats-Msg-Id, must not take the run over from its own runner.
    js = nc.jetstream()
    first = {
        "task": "dup",
        "prompt_text": "original",
        "adapter": "echo",
        "run_id": "dup-1",
        "model_hint": "delay=2",
    }
    second = first | {"prompt_text": "duplicate", "model_hint": None}
    async with running_pool(settings, runners=1) as runners:
        await js.publish(
            f"{settings.subject_prefix}.run.dup", json.dumps(first).encode()
        )
        await wait_until(
            lambda: list(runners[0].running), lambda runs: runs == ["dup-1"]
        )
        await js.publish(
            f"{settings.subject_prefix}.run.dup",
            json.dumps({k: v for k, v in second.items() if v is not None}).encode(),
            headers={"Nats-Msg-Id": "dup-1-again"},
        )
        async with PoolClient(settings) as client:
            result = await wait_until(
                lambda: client.result("dup-1"), lambda found: found is not None
            )
            await wait_until(client.status, lambda status: status.in_stream == 0)
    assert result.output == "echo (no model was called): original"
    assert runners[0].counters["lost_leases"] == 0
    assert runners[0].counters["OK"] == 1


async def test_dropped_run_taken_over_from_live_runner(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    # The runner's result write fails once, so it leaves the message unacked
    # and drops the run while it stays alive. The redelivery may reach any
    # runner, and that runner must take the run over.
    settings = make_settings(nats_server.url, tmp_path, ack_wait_s=1.0)
    connection = await nats.connect(settings.nats_url)
    await provision(connection.jetstream(), settings)
    async with (
        running_pool(settings, runners=1) as first,
        PoolClient(settings) as client,
    ):
        registry = first[0].registry
        finish = registry.finish
        failures = 0

        async def flaky_finish(*args: object, **kwargs: object) -> int:
            nonlocal failures
            if failures == 0:
                failures += 1
                raise TimeoutError("registry did not respond")
            return await finish(*args, **kwargs)  # type: ignore[arg-type]

        registry.finish = flaky_finish  # type: ignore[method-assign]
        # A progress event makes the run claim first, so the result is a
        # lease-checked write that can fail.
        waiting = asyncio.create_task(
            client.run(
                "drop",
                prompt_text="x",
                adapter="echo",
                model_hint="delay=0.2",
                timeout_s=8,
            )
        )
        await wait_until(lambda: failures, lambda count: count == 1)
        # The runner that dropped the run stays alive but pulls no more, so
        # only a takeover by another runner can finish the run.
        first[0].slots = 0
        await first[0]._puller.stop()  # type: ignore[union-attr]
        async with Runner(settings, runner_id="rescuer"):
            result = await waiting
            info = await connection.jetstream().stream_info(settings.runs_stream)
    await connection.close()
    assert result.status == Status.OK
    assert result.attempt == 2
    assert info.state.messages == 0


async def test_exhausted_second_message_removed(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    # A publisher sent the same run twice under different message ids. The
    # second message is nakked while the first one runs, until max_deliver,
    # and must then leave the work queue instead of holding a slot.
    settings = make_settings(nats_server.url, tmp_path, ack_wait_s=1.0, max_deliver=2)
    connection = await nats.connect(settings.nats_url)
    js = connection.jetstream()
    await provision(js, settings)

    payload = {
        "task": "dup",
        "prompt_text": "x",
        "adapter": "echo",
        "run_id": "twice-1",
        "model_hint": "delay=4",
    }
    subject = f"{settings.subject_prefix}.run.dup"

    async with running_pool(settings, runners=1), PoolClient(settings) as client:
        await js.publish(subject, json.dumps(payload).encode())
        await wait_until(
            lambda: client.registry.get_run("twice-1"),
            lambda record: record is not None and record.state == "running",
        )
        await js.publish(subject, json.dumps(payload).encode())

        result = await wait_until(
            lambda: client.result("twice-1"), lambda found: found is not None, 15
        )
        info = await wait_until(
            lambda: js.stream_info(settings.runs_stream),
            lambda info: info.state.messages == 0,
            15,
        )
    await connection.close()
    assert result.status == Status.OK  # type: ignore[attr-defined]
    assert info.state.messages == 0  # type: ignore[attr-defined]
