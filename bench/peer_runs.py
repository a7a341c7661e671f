"""Peers in the same run: Celery, arq and taskiq with the same no-op task.

Each peer gets nine worker slots in one worker process, a sequential round
trip and the throughput of 50 concurrent submitters, the same counts that
superpool gets. A peer whose package or server is missing is skipped with
the reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import spawn
from bench.peers.redis_server import RedisServer
from bench.stats import Summary, median, summarize, time_calls

# The first task waits for the worker to start; later ones never take this long.
FIRST_TASK_TIMEOUT_S = 60.0
TASK_TIMEOUT_S = 30.0
SLOTS = 9
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PeerResult:
    name: str
    how: str
    sequential: Summary | None = None
    rates: tuple[float, ...] = ()
    skipped: str = ""

    @property
    def rate(self) -> float:
        return median(self.rates) if self.rates else float("nan")


@dataclass(frozen=True)
class Counts:
    sequential: int
    warmup: int
    runs: int
    submitters: int
    rounds: int


def missing(*modules: str) -> str:
    """Return "" when every module imports, else a message naming the missing ones."""
    absent = [name for name in modules if importlib.util.find_spec(name) is None]
    if not absent:
        return ""
    return (
        f"not installed: {', '.join(absent)} "
        "(pip install -e '.[bench]' installs the peers)"
    )


def _worker(
    command: Sequence[str], environ: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return spawn(
            command,
            env=environ,
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )


async def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


def _environ(**values: str) -> dict[str, str]:
    environ = dict(os.environ)
    environ.update(values)
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT), *filter(None, [environ.get("PYTHONPATH")])]
    )
    return environ


class _Countdown:
    """The runs a round has left, taken by many submitters at once."""

    def __init__(self, runs: int) -> None:
        self._left = runs
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            self._left -= 1
            return self._left >= 0


async def _async_throughput(
    call: Callable[[], Awaitable[object]], counts: Counts
) -> tuple[float, ...]:
    async def submitter(countdown: _Countdown) -> None:
        while countdown.take():
            await call()

    rates = []
    for _ in range(counts.rounds):
        countdown = _Countdown(counts.runs)
        started = time.perf_counter()
        await asyncio.gather(*(submitter(countdown) for _ in range(counts.submitters)))
        rates.append(counts.runs / (time.perf_counter() - started))
    return tuple(rates)


def _thread_throughput(call: Callable[[], object], counts: Counts) -> tuple[float, ...]:
    def submitter(countdown: _Countdown) -> None:
        while countdown.take():
            call()

    rates = []
    for _ in range(counts.rounds):
        countdown = _Countdown(counts.runs)
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(counts.submitters) as pool:
            futures = [
                pool.submit(submitter, countdown) for _ in range(counts.submitters)
            ]
            for future in futures:
                future.result()
        rates.append(counts.runs / (time.perf_counter() - started))
    return tuple(rates)


def _time_sync(call: Callable[[], object], count: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


async def celery_peer(redis_url: str, log_dir: Path, counts: Counts) -> PeerResult:
    how = "Redis broker and result backend, worker -P threads -c 9"
    reason = missing("celery", "redis")
    if reason:
        return PeerResult("Celery", how, skipped=reason)
    os.environ["BENCH_REDIS_URL"] = redis_url
    from bench.peers import celery_app

    worker = _worker(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.peers.celery_app",
            "worker",
            "-P",
            "threads",
            "-c",
            str(SLOTS),
            "-Q",
            celery_app.QUEUE,
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        _environ(BENCH_REDIS_URL=redis_url),
        log_dir / "celery.log",
    )
    try:

        def one() -> object:
            return celery_app.noop.delay().get(timeout=TASK_TIMEOUT_S)

        await asyncio.to_thread(
            lambda: celery_app.noop.delay().get(timeout=FIRST_TASK_TIMEOUT_S)
        )
        # NOTE: with celery 5.6 and redis-py 5.3, a garbage collection inside
        # the result consumer's PubSub call runs AsyncResult.__del__, which
        # calls the same PubSub again and deadlocks the submitting thread.
        # Collection stays off while submitters run; results are freed by
        # reference counting, outside those calls.
        gc.disable()
        samples = await asyncio.to_thread(
            _time_sync, one, counts.sequential, counts.warmup
        )
        rates = await asyncio.to_thread(_thread_throughput, one, counts)
    finally:
        # NOTE: celery 5.6 AsyncResult.__del__ reconnects to the result
        # backend, and retries for minutes once Redis is gone, blocking the
        # thread that collects it. Collect every result while Redis is up.
        gc.enable()
        gc.collect()
        celery_app.app.close()
        await _stop(worker)
    return PeerResult("Celery", how, summarize(samples), rates)


async def arq_peer(redis_url: str, log_dir: Path, counts: Counts) -> PeerResult:
    how = "Redis, max_jobs 9, poll_delay and result poll 1 ms"
    reason = missing("arq")
    if reason:
        return PeerResult("arq", how, skipped=reason)
    os.environ["BENCH_REDIS_URL"] = redis_url
    from arq.connections import create_pool

    from bench.peers import arq_worker

    worker = _worker(
        [sys.executable, "-m", "bench.peers.arq_worker"],
        _environ(BENCH_REDIS_URL=redis_url),
        log_dir / "arq.log",
    )
    redis = await create_pool(arq_worker.redis_settings())
    try:

        async def run(wait_s: float = TASK_TIMEOUT_S) -> object:
            job = await redis.enqueue_job("noop")
            assert job is not None
            return await job.result(timeout=wait_s, poll_delay=arq_worker.POLL_DELAY_S)

        await run(FIRST_TASK_TIMEOUT_S)
        sequential = summarize(await time_calls(run, counts.sequential, counts.warmup))
        rates = await _async_throughput(run, counts)
    finally:
        await redis.aclose()
        await _stop(worker)
    return PeerResult("arq", how, sequential, rates)


async def taskiq_peer(nats_url: str, log_dir: Path, counts: Counts) -> PeerResult:
    how = (
        "taskiq-nats pull JetStream broker, results in a NATS KV bucket, "
        "9 async tasks, check_interval 1 ms"
    )
    reason = missing("taskiq", "taskiq_nats")
    if reason:
        return PeerResult("taskiq", how, skipped=reason)
    os.environ["BENCH_NATS_URL"] = nats_url
    from bench.peers import taskiq_app

    taskiq = str(Path(sys.executable).with_name("taskiq"))
    worker = _worker(
        [
            taskiq,
            "worker",
            "bench.peers.taskiq_app:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(SLOTS),
            "--log-level",
            "WARNING",
        ],
        _environ(BENCH_NATS_URL=nats_url),
        log_dir / "taskiq.log",
    )
    await taskiq_app.broker.startup()
    try:

        async def run(wait_s: float = TASK_TIMEOUT_S) -> object:
            task = await taskiq_app.noop.kiq()
            return await task.wait_result(
                check_interval=taskiq_app.CHECK_INTERVAL_S, timeout=wait_s
            )

        await run(FIRST_TASK_TIMEOUT_S)
        sequential = summarize(await time_calls(run, counts.sequential, counts.warmup))
        rates = await _async_throughput(run, counts)
    finally:
        await taskiq_app.broker.shutdown()
        await _stop(worker)
    return PeerResult("taskiq", how, sequential, rates)


async def run_peers(nats_url: str, work_dir: Path, counts: Counts) -> list[PeerResult]:
    """Measure every peer that is installed; Redis is started for Celery and arq."""
    log_dir = work_dir / "peer-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    results = []
    redis = RedisServer(work_dir / "redis")
    redis_url = ""
    redis_reason = ""
    try:
        redis_url = await redis.start()
    except (FileNotFoundError, TimeoutError) as exc:
        redis_reason = str(exc)
    try:
        for name, peer in (("Celery", celery_peer), ("arq", arq_peer)):
            if redis_reason:
                results.append(PeerResult(name, "", skipped=redis_reason))
                continue
            results.append(await _guarded(name, peer(redis_url, log_dir, counts)))
    finally:
        await redis.stop()
    results.append(await _guarded("taskiq", taskiq_peer(nats_url, log_dir, counts)))
    return results


async def _guarded(name: str, measurement: Awaitable[PeerResult]) -> PeerResult:
    try:
        return await measurement
    except Exception as exc:
        return PeerResult(name, "", skipped=f"failed: {exc!r}")
