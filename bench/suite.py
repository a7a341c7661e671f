"""Run every measurement against one nats-server and build the report."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import admission, mcp_runs, memory, peer_runs, registry_scale, spawn
from bench.floor import Floor, measure_floor
from bench.harness import (
    RunnerProcesses,
    Server,
    nats_server_version,
    pool_settings,
    provision_pool,
)
from bench.pool_runs import Throughput, sequential, throughput
from bench.report import Report, Row, describe_machine
from bench.stats import Summary, ms, ratio
from bus.client import PoolClient
from bus.settings import Settings

RUNNERS = 3
SLOTS = 3
SUBMITTERS = 50
# Each delayed run keeps its slot this long, so the ideal is slots / delay.
DELAY_S = 0.1
SIMULATED_RUNNERS = 100
# RSS growth below this over the memory runs counts as noise.
RSS_NOISE_MB = 2.0


@dataclass(frozen=True)
class Counts:
    """How many samples each measurement takes; warm-ups come on top."""

    floor: int
    sequential: int
    warmup: int
    mcp: int
    throughput_runs: int
    rounds: int
    delay_runs: int
    busy: int
    unreachable: int
    frozen: int
    memory_runs: int
    registry: int
    peer_sequential: int
    peer_runs: int
    spawn: int


FULL = Counts(
    floor=3000,
    sequential=3000,
    warmup=300,
    mcp=300,
    throughput_runs=3000,
    rounds=3,
    delay_runs=450,
    busy=1000,
    unreachable=300,
    frozen=5,
    memory_runs=10_000,
    registry=500,
    peer_sequential=2000,
    peer_runs=3000,
    spawn=5,
)
QUICK = Counts(
    floor=500,
    sequential=500,
    warmup=50,
    mcp=50,
    throughput_runs=600,
    rounds=1,
    delay_runs=180,
    busy=200,
    unreachable=50,
    frozen=2,
    memory_runs=1000,
    registry=100,
    peer_sequential=300,
    peer_runs=600,
    spawn=2,
)


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _spread(summary: Summary) -> str:
    return f"{summary.describe()} (n={summary.count})"


def _rate(result: Throughput) -> str:
    low, high = min(result.rates), max(result.rates)
    span = f" ({low:,.0f} to {high:,.0f} over {len(result.rates)} rounds)"
    return f"{result.rate:,.0f} runs/s" + (span if len(result.rates) > 1 else "")


class Suite:
    """The measurements of one `python -m bench` run, in order."""

    def __init__(self, counts: Counts, work_dir: Path, mode: str, peers: bool) -> None:
        self.counts = counts
        self.work_dir = work_dir
        self.report = Report(mode)
        self.peers = peers
        self.floor: Floor | None = None
        self.pool: Summary | None = None
        # Throughput with the client waiting for slots, and with callers
        # retrying POOL_BUSY themselves.
        self.rate: Throughput | None = None
        self.retry_rate: Throughput | None = None
        # Processes whose CPU time the throughput figure splits by role.
        self.processes: dict[str, list[int]] = {}

    async def run(self) -> Report:
        server = Server(self.work_dir / "nats")
        url = await server.start()
        assert server.embedded.pid is not None
        self.processes = {"client": [os.getpid()], "nats-server": [server.embedded.pid]}
        self.report.machine = describe_machine(nats_server_version())
        try:
            await self._floor(url)
            await self._pool(url)
            await self._unreachable(url)
            await self._idle_runner(url)
            if self.peers:
                await self._peers(url)
            else:
                self.report.note("Peers skipped (--no-peers).")
            await self._spawn()
        finally:
            await server.stop()
        return self.report

    # 1. Floor

    async def _floor(self, url: str) -> None:
        progress("floor: raw JetStream round trip and core request-reply")
        count = self.counts.floor
        self.floor = floor = await measure_floor(url, count, count // 10)
        add = self.report.add
        add(
            Row(
                "1",
                "floor: JetStream publish, pull in another process, core reply, ack",
                _spread(floor.jetstream),
            )
        )
        add(
            Row(
                "1",
                "floor: core NATS request-reply to another process",
                _spread(floor.core),
            )
        )

    # 2 to 7: the pool

    async def _pool(self, url: str) -> None:
        settings = pool_settings(url, self.work_dir, "bench")
        await provision_pool(settings)
        runners = RunnerProcesses(
            settings, RUNNERS, SLOTS, self.work_dir / "runner-logs"
        )
        progress(f"starting {RUNNERS} superpool runner processes x {SLOTS} slots")
        await runners.start()
        self.processes["runners"] = runners.pids
        idle = [memory.rss_mb(pid) for pid in runners.pids]
        try:
            async with PoolClient(settings, name="bench") as client:
                await self._sequential(client)
                await self._mcp(settings)
                await self._throughput(client)
                await self._busy(client)
                await self._memory(client, runners, idle)
                await self._registry(client, settings.heartbeat_interval_s)
        finally:
            await runners.stop()

    async def _sequential(self, client: PoolClient) -> None:
        progress("pool: sequential PoolClient.run")
        assert self.floor is not None
        self.pool = pool = await sequential(
            client, self.counts.sequential, self.counts.warmup
        )
        floor = self.floor.jetstream
        where = f"{RUNNERS} `superpool runner` processes x {SLOTS} slots"
        self.report.add(
            Row(
                "2",
                f"PoolClient.run, echo, sequential, p50 ({where})",
                _spread(pool),
                f"floor p50 {ms(floor.p50)}",
                ratio(pool.p50, floor.p50),
                "<= 2x",
                pool.p50 <= 2 * floor.p50,
            )
        )
        self.report.add(
            Row(
                "2",
                "PoolClient.run, echo, sequential, p99",
                ms(pool.p99),
                f"floor p99 {ms(floor.p99)}",
                ratio(pool.p99, floor.p99),
                "<= 5x",
                pool.p99 <= 5 * floor.p99,
            )
        )

    async def _mcp(self, settings: Settings) -> None:
        assert self.pool is not None and self.floor is not None
        count = self.counts.mcp
        for name, measure in (
            ("stdio", mcp_runs.over_stdio),
            ("streamable HTTP", mcp_runs.over_http),
        ):
            progress(f"mcp: super_agent_run over {name}")
            summary = await measure(settings, count, max(5, count // 10))
            self.report.add(
                Row(
                    "3",
                    f"super_agent_run over {name} (mcp SDK Client, proxy process)",
                    _spread(summary),
                    f"PoolClient.run p50 {ms(self.pool.p50)}",
                    ratio(summary.p50, self.pool.p50),
                    f"floor ratio {ratio(summary.p50, self.floor.jetstream.p50)}",
                )
            )

    async def _throughput(self, client: PoolClient) -> None:
        self.retry_rate = await self._fast_throughput(client, wait_for_slot=False)
        self.rate = await self._fast_throughput(client, wait_for_slot=True)
        await self._delayed(client)

    async def _fast_throughput(
        self, client: PoolClient, *, wait_for_slot: bool
    ) -> Throughput:
        """Measure echo runs without delay and add the rate and CPU rows."""
        counts = self.counts
        mode = (
            "each waits in PoolClient.run (wait_for_slot_s)"
            if wait_for_slot
            else "each retries POOL_BUSY after up to 5 ms"
        )
        progress(f"throughput: {SUBMITTERS} submitters, echo without delay, {mode}")
        before = self._cpu()
        fast = await throughput(
            client,
            runs=counts.throughput_runs,
            submitters=SUBMITTERS,
            rounds=counts.rounds,
            wait_for_slot=wait_for_slot,
        )
        after = self._cpu()
        spent = {
            role: (after[role] - before[role]) * 1e6 / fast.runs for role in before
        }
        per_run = fast.busy_retries / fast.runs
        self.report.add(
            Row(
                "4",
                f"throughput, {RUNNERS}x{SLOTS} slots, {SUBMITTERS} submitters, "
                f"echo no delay, {mode}",
                _rate(fast),
                f"{per_run:.1f} POOL_BUSY retries per run, {fast.failures} failed",
                "",
                "ahead of every peer (section 8)" if wait_for_slot else "",
            )
        )
        total = sum(spent.values())
        self.report.add(
            Row(
                "4",
                "CPU time per run during that throughput (user + system)",
                ", ".join(f"{role} {value:,.0f} µs" for role, value in spent.items())
                + f"; total {total:,.0f} µs",
                "2 cores",
                f"{2e6 / total:,.0f} runs/s at full CPU",
            )
        )
        return fast

    async def _delayed(self, client: PoolClient) -> None:
        counts = self.counts
        progress(f"throughput: {SUBMITTERS} submitters, echo with {DELAY_S:g} s delay")
        slow = await throughput(
            client,
            runs=counts.delay_runs,
            submitters=SUBMITTERS,
            rounds=max(1, counts.rounds - 1),
            model_hint=f"delay={DELAY_S:g}",
        )
        ideal = RUNNERS * SLOTS / DELAY_S
        efficiency = slow.rate / ideal
        self.report.add(
            Row(
                "4",
                f"throughput, echo with {DELAY_S:g} s delay (slot-bound)",
                _rate(slow),
                f"ideal {ideal:.0f} runs/s",
                f"{efficiency:.1%}",
                ">= 90%",
                efficiency >= 0.9,
            )
        )

    def _cpu(self) -> dict[str, float]:
        return {
            role: sum(memory.cpu_seconds(pid) for pid in pids)
            for role, pids in self.processes.items()
        }

    async def _busy(self, client: PoolClient) -> None:
        progress("admission: POOL_BUSY with every slot held")
        busy = await admission.busy_latency(
            client, RUNNERS * SLOTS, self.counts.busy, self.counts.busy // 10
        )
        self.report.add(
            Row(
                "5",
                "POOL_BUSY decision, every slot busy (p50 / p90 / p99)",
                _spread(busy),
                "",
                "",
                "p99 < 5 ms",
                busy.p99 < 0.005,
            )
        )

    async def _memory(
        self, client: PoolClient, runners: RunnerProcesses, idle: list[float]
    ) -> None:
        before = [memory.rss_mb(pid) for pid in runners.pids]
        runs = self.counts.memory_runs
        progress(f"memory: {runs:,} more runs through {RUNNERS} runners")
        await throughput(client, runs=runs, submitters=SUBMITTERS, rounds=1)
        after = [memory.rss_mb(pid) for pid in runners.pids]
        growth = max(b - a for a, b in zip(before, after, strict=True))
        self.report.add(
            Row(
                "6",
                "runner RSS at start, before any run (each runner)",
                ", ".join(f"{value:.1f} MiB" for value in idle),
                "",
                "",
                "< 80 MB",
                max(idle) < 80 * 1e6 / 2**20,
            )
        )
        self.report.add(
            Row(
                "6",
                f"runner RSS before and after {runs:,} more runs",
                "; ".join(
                    f"{a:.1f} -> {b:.1f} MiB"
                    for a, b in zip(before, after, strict=True)
                ),
                "",
                f"max growth {growth:+.1f} MiB",
                f"< {RSS_NOISE_MB:g} MiB growth",
                growth < RSS_NOISE_MB,
            )
        )

    async def _registry(self, client: PoolClient, interval_s: float) -> None:
        count = self.counts.registry
        progress("registry: status() and admission with 0 and 100 simulated runners")
        alone = await registry_scale.registry_figures(client, count, count // 10)
        async with registry_scale.simulated_runners(
            client, SIMULATED_RUNNERS, interval_s
        ):
            crowded = await registry_scale.registry_figures(client, count, count // 10)
        for label, plain, busy in (
            ("status()", alone.status, crowded.status),
            (
                "live capacity read (admission's registry read)",
                alone.capacity_read,
                crowded.capacity_read,
            ),
            ("PoolClient.run, sequential", alone.run, crowded.run),
        ):
            self.report.add(
                Row(
                    "7",
                    f"{label} with {SIMULATED_RUNNERS} simulated runners",
                    _spread(busy),
                    f"{RUNNERS} runners only: p50 {ms(plain.p50)}",
                    ratio(busy.p50, plain.p50),
                )
            )

    async def _unreachable(self, url: str) -> None:
        progress(
            "admission: POOL_UNREACHABLE without runners, server stopped and frozen"
        )
        result = await admission.unreachable(
            url, self.work_dir, self.counts.unreachable, self.counts.frozen
        )
        limit = result.request_timeout * 1.1
        add = self.report.add
        add(
            Row(
                "5",
                "POOL_UNREACHABLE, no live runner",
                _spread(result.no_runner),
                "",
                "",
                "< 50 ms",
                result.no_runner.p99 < 0.05,
            )
        )
        add(
            Row(
                "5",
                "POOL_UNREACHABLE, nats-server stopped (the client sees the "
                "connection closed)",
                _spread(result.disconnected),
                "",
                "",
                "at once",
                result.disconnected.p99 < 0.005,
            )
        )
        add(
            Row(
                "5",
                "POOL_UNREACHABLE, nats-server frozen by SIGSTOP",
                f"{ms(result.frozen.p50)} median, {ms(result.frozen.max)} max "
                f"(n={result.frozen.count})",
                f"request_timeout {result.request_timeout:g} s",
                ratio(result.frozen.max, result.request_timeout),
                f"<= {limit:.1f} s",
                result.frozen.max <= limit,
            )
        )

    async def _idle_runner(self, url: str) -> None:
        progress("memory: an idle runner under -X importtime")
        settings = pool_settings(url, self.work_dir, "idle")
        await provision_pool(settings)
        idle = await memory.idle_runner(settings, self.work_dir / "idle-logs")
        found = ", ".join(idle.provider_modules) or "none"
        self.report.add(
            Row(
                "6",
                "provider SDKs imported by an idle runner (-X importtime)",
                f"{found} of {idle.modules_imported} modules",
                "",
                "",
                "none",
                not idle.provider_modules,
            )
        )

    # 8. Peers

    async def _peers(self, url: str) -> None:
        assert self.pool is not None and self.rate is not None
        counts = self.counts
        progress("peers: Celery, arq, taskiq")
        peer_counts = peer_runs.Counts(
            counts.peer_sequential,
            counts.warmup,
            counts.peer_runs,
            SUBMITTERS,
            counts.rounds,
        )
        for peer in await peer_runs.run_peers(url, self.work_dir, peer_counts):
            self._peer_rows(peer)

    def _peer_rows(self, peer: peer_runs.PeerResult) -> None:
        assert self.pool is not None and self.rate is not None
        assert self.retry_rate is not None
        if peer.skipped or peer.sequential is None:
            self.report.add(Row("8", f"{peer.name}: skipped", peer.skipped))
            return
        seq = peer.sequential
        self.report.add(
            Row(
                "8",
                f"{peer.name} sequential ({peer.how})",
                _spread(seq),
                f"superpool p50 {ms(self.pool.p50)}",
                ratio(seq.p50, self.pool.p50),
                "superpool faster",
                self.pool.p50 < seq.p50,
            )
        )
        rate = peer.rate
        self.report.add(
            Row(
                "8",
                f"{peer.name} throughput, {SUBMITTERS} submitters",
                f"{rate:,.0f} runs/s",
                f"superpool {self.rate.rate:,.0f} runs/s waiting in the client "
                f"({self.retry_rate.rate:,.0f} retrying POOL_BUSY)",
                f"{self.rate.rate / rate:.2f}x",
                "superpool faster",
                self.rate.rate > rate,
            )
        )

    # 9. Process per task

    async def _spawn(self) -> None:
        progress("process per task: python -c 'import anthropic, google.genai'")
        assert self.pool is not None
        summary = await spawn.process_per_task(self.counts.spawn)
        self.report.add(
            Row(
                "9",
                "a new Python process importing anthropic and google-genai",
                f"{ms(summary.p50)} median of {summary.count}",
                f"pool dispatch p50 {ms(self.pool.p50)}",
                ratio(summary.p50, self.pool.p50),
                ">= 1,000x",
                summary.p50 >= 1000 * self.pool.p50,
            )
        )
