"""When a run is claimed: with its result, at its first outward step, or on a timer.

A first delivery starts before its claim. Whatever the run does outside the
runner waits for the claim, and a run whose claim is rejected leaves no trace
but the handling that its record requires.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from bus.client import PoolClient
from bus.provision import provision
from bus.server import EmbeddedServer
from bus.settings import Settings
from bus.subjects import REPLY_HEADER
from bus.wire import RunEvent, RunRecord, RunResult, Status, decode_event
from registry.registry import RunRegistry
from runner import execution
from runner.adapters.base import AdapterOutput, AdapterRun
from runner.runner import Runner
from tests.conftest import make_settings
from tests.pool import running_pool, wait_until


class SilentAdapter:
    """Works for `seconds` without any outward step, then returns its output."""

    name = "echo"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = 0
        self.cancelled = 0

    async def run(self, run: AdapterRun) -> AdapterOutput:
        self.started += 1
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return AdapterOutput(output=f"silent: {run.prompt}", model="echo")


@pytest.fixture
def silent(monkeypatch: pytest.MonkeyPatch) -> SilentAdapter:
    adapter = SilentAdapter(0.6)
    monkeypatch.setattr(execution, "get_adapter", lambda name: adapter)
    return adapter


async def _events(nc: nats.NATS) -> tuple[str, asyncio.Queue[RunEvent]]:
    """Subscribe an inbox that collects run events; return it and the queue."""
    inbox = nc.new_inbox()
    queue: asyncio.Queue[RunEvent] = asyncio.Queue()

    async def collect(msg: nats.aio.msg.Msg) -> None:
        queue.put_nowait(decode_event(msg.data))

    await nc.subscribe(inbox, cb=collect)
    return inbox, queue


async def _publish(
    nc: nats.NATS, settings: Settings, run_id: str, reply_to: str
) -> int:
    payload = {"task": "claims", "prompt_text": "x", "adapter": "echo"}
    ack = await nc.jetstream().publish(
        f"{settings.subject_prefix}.run.claims",
        json.dumps(payload | {"run_id": run_id}).encode(),
        headers={"Nats-Msg-Id": run_id, REPLY_HEADER: reply_to},
    )
    return ack.seq


async def _until_result(queue: asyncio.Queue[RunEvent]) -> list[RunEvent]:
    events = []
    while not events or events[-1].kind != "result":
        events.append(await asyncio.wait_for(queue.get(), 10))
    return events


async def test_quick_run_claimed_with_its_result(
    settings: Settings, nc: nats.NATS
) -> None:
    registry = await RunRegistry.open(nc, settings)
    inbox, queue = await _events(nc)
    async with running_pool(settings, runners=1) as runners:
        seq = await _publish(nc, settings, "quick-1", inbox)
        events = await _until_result(queue)
        entry = await registry.run_entry("quick-1")
    assert entry is not None
    record, revision = entry
    assert [event.kind for event in events] == ["result"]
    assert events[0].result is not None and events[0].result.status == Status.OK
    assert record.state == "final"
    assert record.runner_id == "runner-0"
    assert record.attempt == 1
    assert record.stream_seq == seq
    assert record.result == events[0].result
    assert record.claimed_at <= record.result.started_at
    # One write made the record: the claim and the result together.
    history = await (await nc.jetstream().key_value(settings.registry_bucket)).history(
        "run.quick-1"
    )
    assert [item.revision for item in history] == [revision]
    assert runners[0].counters["OK"] == 1


async def test_progress_waits_for_the_claim(settings: Settings, nc: nats.NATS) -> None:
    registry = await RunRegistry.open(nc, settings)
    states: list[tuple[str, str]] = []

    async def on_event(event: RunEvent) -> None:
        record = await registry.get_run(event.run_id)
        states.append((event.kind, record.state if record else "none"))

    async with running_pool(settings, runners=1), PoolClient(settings) as client:
        result = await client.run(
            "claims",
            prompt_text="x",
            adapter="echo",
            model_hint="delay=0.2",
            on_event=on_event,
        )
    assert result.status == Status.OK
    assert states == [
        ("started", "running"),
        ("progress", "running"),
        ("result", "final"),
    ]


async def test_silent_run_claimed_after_a_while(
    settings: Settings, nc: nats.NATS, silent: SilentAdapter
) -> None:
    registry = await RunRegistry.open(nc, settings)
    inbox, queue = await _events(nc)
    async with running_pool(settings, runners=1):
        await _publish(nc, settings, "silent-1", inbox)
        record = await wait_until(
            lambda: registry.get_run("silent-1"), lambda found: found is not None
        )
        events = await _until_result(queue)
    assert isinstance(record, RunRecord)
    assert record.state == "running"
    assert record.runner_id == "runner-0"
    assert [event.kind for event in events] == ["started", "result"]
    assert events[-1].result is not None
    assert events[-1].result.output == "silent: x"
    assert silent.started == 1


@pytest.mark.parametrize("silent_s", [0.0, 30.0], ids=["quick", "silent"])
async def test_withdrawn_run_dropped_unrun(
    settings: Settings,
    nc: nats.NATS,
    monkeypatch: pytest.MonkeyPatch,
    silent_s: float,
) -> None:
    # A caller cancelled the run while it was queued, and its record shows it.
    # A quick echo run ends before its claim, a silent one is claimed on the
    # timer; both must be dropped, the silent one cancelled mid-work.
    adapter = SilentAdapter(silent_s)
    if silent_s:
        monkeypatch.setattr(execution, "get_adapter", lambda name: adapter)
    registry = await RunRegistry.open(nc, settings)
    cancelled = RunResult(run_id="gone-1", status=Status.CANCELLED, output="")
    await registry.withdraw("gone-1", result=cancelled)
    inbox, queue = await _events(nc)
    async with running_pool(settings, runners=1) as runners:
        await _publish(nc, settings, "gone-1", inbox)
        events = await _until_result(queue)
        await wait_until(
            lambda: nc.jetstream().stream_info(settings.runs_stream),
            lambda info: info.state.messages == 0,
        )
        record = await registry.get_run("gone-1")
    assert [event.kind for event in events] == ["result"]
    assert events[0].result == cancelled
    assert record is not None
    assert record.state == "withdrawn"
    assert record.result == cancelled
    assert runners[0].counters["OK"] == 0
    assert runners[0].counters["CANCELLED"] == 0
    if silent_s:
        assert adapter.started == 1
        assert adapter.cancelled == 1


async def test_failed_claim_leaves_message_for_redelivery(
    nats_server: EmbeddedServer, tmp_path: Path, silent: SilentAdapter
) -> None:
    settings = make_settings(nats_server.url, tmp_path, ack_wait_s=1.0)
    nc = await nats.connect(settings.nats_url)
    await provision(nc.jetstream(), settings)
    silent.seconds = 0.2
    async with (
        running_pool(settings, runners=1) as runners,
        PoolClient(settings) as client,
    ):
        runner: Runner = runners[0]
        claim = runner.registry.claim
        calls = 0

        async def flaky_claim(record: RunRecord) -> execution.Claim:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise TimeoutError("registry did not respond")
            return await claim(record)

        runner.registry.claim = flaky_claim  # type: ignore[method-assign]
        result = await client.run("claims", prompt_text="x", adapter="echo")
        info = await nc.jetstream().stream_info(settings.runs_stream)
    await nc.close()
    assert result.status == Status.OK
    assert result.output == "silent: x"
    assert result.attempt == 2
    assert calls == 2
    assert silent.started == 2
    assert silent.cancelled == 1
    assert info.state.messages == 0
