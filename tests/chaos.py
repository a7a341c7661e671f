"""Chaos load: many runs through runner processes that keep getting SIGKILLed.

Used by tests/test_chaos.py with a short load, and by hand for the long run
whose figures docs/reliability.md records:

    python -m tests.chaos --runs 200 --kill-every 3
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import random
import re
import signal
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import nats

from bus.client import PoolClient
from bus.connection import connect
from bus.provision import provision
from bus.server import EmbeddedServer
from bus.settings import Settings
from bus.wire import RunResult, Status, decode_result
from tests.conftest import make_settings
from tests.pool import RunnerProcess, wait_until

# Runs are retried on POOL_BUSY after a random wait up to this long.
BUSY_RETRY_MAX_S = 0.3
_LOG_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: "
    r"run (?P<event>started|finished) run_id=(?P<run_id>\S+) .*?runner=(?P<runner>\S+)"
)


@dataclass
class ChaosReport:
    runs: int = 0
    kills: int = 0
    ok: int = 0
    lost: list[str] = field(default_factory=list)
    conflicting_results: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    redelivered: int = 0
    # Runs started, as read from the runner logs; at least `runs`.
    starts_logged: int = 0
    leaked_messages: int = 0
    leaked_slots: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"runs={self.runs} kills={self.kills} ok={self.ok} lost={len(self.lost)} "
            f"conflicting_results={len(self.conflicting_results)} "
            f"overlapping_holders={len(self.overlaps)} redelivered={self.redelivered} "
            f"starts_logged={self.starts_logged} "
            f"leaked_messages={self.leaked_messages} leaked_slots={self.leaked_slots} "
            f"seconds={self.seconds:.1f}"
        )


async def run_until_admitted(
    client: PoolClient, index: int, delay_s: float
) -> RunResult:
    while True:
        result = await client.run(
            "chaos",
            prompt_text=f"run {index}",
            adapter="echo",
            model_hint=f"delay={delay_s:g}",
            run_id=f"chaos-{index}",
        )
        if result.status != Status.POOL_BUSY:
            return result
        await asyncio.sleep(random.uniform(0.05, BUSY_RETRY_MAX_S))


async def chaos(
    settings: Settings,
    log_dir: Path,
    *,
    runs: int,
    kill_every_s: float,
    delay_s: float = 0.5,
    runners: int = 3,
) -> ChaosReport:
    """Send `runs` runs; SIGKILL and restart a runner every `kill_every_s`."""
    report = ChaosReport(runs=runs)
    processes = [RunnerProcess(settings, f"chaos-{i}", log_dir) for i in range(runners)]
    kill_times: dict[str, float] = {}
    for process in processes:
        process.start()
    seen: dict[str, list[RunResult]] = collections.defaultdict(list)
    nc = await nats.connect(settings.nats_url)

    async def on_result(msg: nats.aio.msg.Msg) -> None:
        result = decode_result(msg.data)
        seen[result.run_id].append(result)

    await nc.subscribe(f"{settings.subject_prefix}.result.>", cb=on_result)
    started = time.monotonic()
    try:
        async with PoolClient(settings) as client:
            await wait_until(client.registry.live_capacity, lambda n: n == 3 * runners)
            load = asyncio.gather(
                *(run_until_admitted(client, index, delay_s) for index in range(runs))
            )
            killer = asyncio.create_task(
                _keep_killing(
                    processes, kill_every_s, kill_times, report, settings, log_dir
                )
            )
            results = await load
            killer.cancel()
            await asyncio.gather(killer, return_exceptions=True)
            await wait_until(
                client.status, lambda s: s.in_stream == 0 and s.slots_busy == 0, 60
            )
            status = await client.status()
            records = {r.run_id: r for r in await client.registry.runs()}
    finally:
        for process in processes:
            process.stop()
        await nc.close()
    report.seconds = time.monotonic() - started
    report.ok = sum(result.status == Status.OK for result in results)
    report.lost = [r.run_id for r in results if r.status != Status.OK]
    report.redelivered = sum(result.attempt > 1 for result in results)
    for run_id, copies in seen.items():
        record = records.get(run_id)
        final = record.result if record else None
        if final is None or any(_differs(copy, final) for copy in copies):
            report.conflicting_results.append(run_id)
    report.overlaps, report.starts_logged = find_overlaps(log_dir, kill_times)
    report.leaked_messages = status.in_stream
    report.leaked_slots = status.slots_busy
    return report


def _differs(one: RunResult, other: RunResult) -> bool:
    return (one.status, one.runner_id, one.attempt, one.output) != (
        other.status,
        other.runner_id,
        other.attempt,
        other.output,
    )


async def _keep_killing(
    processes: list[RunnerProcess],
    every_s: float,
    kill_times: dict[str, float],
    report: ChaosReport,
    settings: Settings,
    log_dir: Path,
) -> None:
    generation = 0
    while True:
        await asyncio.sleep(every_s)
        index = random.randrange(len(processes))
        victim = processes[index]
        victim.signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait, 10)
        kill_times[victim.runner_id] = time.time()
        report.kills += 1
        generation += 1
        replacement = RunnerProcess(settings, f"chaos-{index}-g{generation}", log_dir)
        replacement.start()
        processes[index] = replacement


def find_overlaps(log_dir: Path, kill_times: dict[str, float]) -> tuple[list[str], int]:
    """Return the run_ids two runners held at once, and the starts logged."""
    spans: dict[str, list[tuple[float, float, str]]] = collections.defaultdict(list)
    for log in log_dir.glob("*.log"):
        open_spans: dict[str, float] = {}
        for line in log.read_text().splitlines():
            match = _LOG_LINE.match(line)
            if not match:
                continue
            moment = datetime.strptime(
                match["time"], "%Y-%m-%d %H:%M:%S,%f"
            ).timestamp()
            if match["event"] == "started":
                open_spans[match["run_id"]] = moment
            elif match["run_id"] in open_spans:
                begin = open_spans.pop(match["run_id"])
                spans[match["run_id"]].append((begin, moment, match["runner"]))
        runner = log.stem
        for run_id, begin in open_spans.items():
            spans[run_id].append((begin, kill_times.get(runner, float("inf")), runner))
    overlapping = []
    starts = sum(len(held) for held in spans.values())
    for run_id, held in spans.items():
        held.sort()
        for (_, end, first), (begin, _, second) in itertools.pairwise(held):
            if first != second and begin < end:
                overlapping.append(run_id)
                break
    return overlapping, starts


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="superpool-chaos-") as scratch:
        root = Path(scratch)
        with EmbeddedServer(root / "nats") as server:
            settings = make_settings(server.url, root, ack_wait_s=2.0)
            nc = await connect(settings, name="chaos-provision")
            await provision(nc.jetstream(), settings)
            await nc.close()
            report = await chaos(
                settings,
                root,
                runs=args.runs,
                kill_every_s=args.kill_every,
                delay_s=args.delay,
            )
    print(report.summary())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument(
        "--kill-every", type=float, default=3.0, help="seconds between kills"
    )
    parser.add_argument("--delay", type=float, default=0.5, help="echo delay per run")
    asyncio.run(_main(parser.parse_args()))
