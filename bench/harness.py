"""The benchmark's own nats-server, pools and runner processes.

Every measurement runs against one nats-server that the harness starts on a
free loopback port. Each pool gets its own stream, consumer and bucket names,
so the floor, the pool and the simulated registry never see each other.
Runners run as `superpool runner` child processes, the way they are deployed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from bus.client import PoolClient
from bus.connection import connect
from bus.provision import provision
from bus.server import EmbeddedServer, find_binary, server_version
from bus.settings import Settings, child_environ

logger = logging.getLogger(__name__)

# Starting a runner process takes about 1 s on a 2-core machine; this bounds it.
RUNNER_START_TIMEOUT_S = 30.0
# A runner drains its runs on SIGTERM; after this long it is killed.
RUNNER_STOP_TIMEOUT_S = 15.0
# Time between reads of the registry while waiting for runners.
POLL_S = 0.02


def spawn(command: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start a child process; starting returns at once, so async callers may use it."""
    return subprocess.Popen(list(command), **options)


def pool_settings(url: str, work_dir: Path, name: str, **overrides: object) -> Settings:
    """Return settings for a pool called `name` whose resources no other pool uses."""
    roots = work_dir / "roots"
    roots.mkdir(parents=True, exist_ok=True)
    values: dict[str, object] = {
        "nats_url": url,
        "subject_prefix": name,
        "runs_stream": f"{name.upper()}_RUNS",
        "results_stream": f"{name.upper()}_RESULTS",
        "registry_bucket": f"{name}-registry",
        "service_name": f"superpool-{name}",
        "workspace_roots": (str(roots),),
        "work_root": str(work_dir / "work"),
        "probe_port": -1,
        "proxy_probe_port": -1,
        "proxy_port": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def provision_pool(settings: Settings) -> None:
    nc = await connect(settings, name="bench-provision")
    try:
        await provision(nc.jetstream(timeout=settings.request_timeout), settings)
    finally:
        await nc.close()


def nats_server_version() -> str:
    return ".".join(str(part) for part in server_version(find_binary()))


class Server:
    """The benchmark's nats-server, with JetStream in `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.embedded = EmbeddedServer(data_dir)
        self.url = ""

    async def start(self) -> str:
        self.url = await asyncio.to_thread(self.embedded.start)
        return self.url

    async def stop(self) -> None:
        pid = self.embedded.pid
        if pid is not None:
            # A server frozen by a measurement must wake up to stop.
            os.kill(pid, signal.SIGCONT)
        await asyncio.to_thread(self.embedded.stop)


class RunnerProcesses:
    """`superpool runner` child processes of one pool."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        slots: int,
        log_dir: Path,
        *,
        python_options: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.count = count
        self.slots = slots
        self.log_dir = log_dir
        self.python_options = tuple(python_options)
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    async def start(self) -> None:
        """Start the runners and wait until the registry counts all their slots."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        environ = child_environ(self.settings)
        for index in range(self.count):
            runner_id = f"bench-{index}"
            with (self.log_dir / f"{runner_id}.log").open("ab") as log:
                self.processes.append(
                    spawn(
                        runner_command(runner_id, self.slots, self.python_options),
                        env=environ,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )
        await wait_for_capacity(self.settings, self.count * self.slots)

    async def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                await asyncio.to_thread(process.wait, RUNNER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("runner ignored SIGTERM pid=%d; killing", process.pid)
                process.kill()
                await asyncio.to_thread(process.wait)
        self.processes.clear()


def runner_command(
    runner_id: str, slots: int, python_options: Sequence[str] = ()
) -> list[str]:
    # WARNING keeps the per-run INFO lines out of the measurement, as the
    # peers' workers are run at WARNING too.
    return [
        sys.executable,
        *python_options,
        "-m",
        "superpool.cli",
        "--log-level",
        "WARNING",
        "runner",
        "--runner-id",
        runner_id,
        "--slots",
        str(slots),
    ]


async def wait_for_capacity(
    settings: Settings, expected: int, limit_s: float = RUNNER_START_TIMEOUT_S
) -> None:
    """Wait until the registry's live capacity is `expected` slots.

    Raises:
        TimeoutError: the capacity did not reach `expected` within `limit_s`.
    """
    deadline = time.monotonic() + limit_s
    async with PoolClient(settings, name="bench-wait") as client:
        while True:
            capacity = await client.registry.live_capacity()
            if capacity == expected:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"live capacity is {capacity} slots, not {expected}, after "
                    f"{limit_s:g} s; see the runner logs"
                )
            await asyncio.sleep(POLL_S)


async def wait_stream_empty(nc: NATS, stream: str, limit_s: float = 30.0) -> None:
    """Wait until the work queue `stream` contains no message."""
    js = nc.jetstream()
    deadline = time.monotonic() + limit_s
    while (await js.stream_info(stream)).state.messages:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"stream {stream} still contains messages after {limit_s} s"
            )
        await asyncio.sleep(POLL_S)
