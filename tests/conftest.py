"""Fixtures: one real nats-server per session, unique pool names per test."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bus.connection import connect
from bus.provision import provision
from bus.server import EmbeddedServer
from bus.settings import Settings

_test_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


def make_settings(url: str, tmp_path: Path, **overrides: object) -> Settings:
    """Return settings whose stream, bucket and subject names no other test uses."""
    number = next(_test_numbers)
    roots = tmp_path / "roots"
    roots.mkdir(exist_ok=True)
    values: dict[str, object] = {
        "nats_url": url,
        "subject_prefix": f"t{number}",
        "runs_stream": f"RUNS_{number}",
        "results_stream": f"RESULTS_{number}",
        "registry_bucket": f"registry-{number}",
        "consumer": "runners",
        "service_name": f"superpool-t{number}",
        "heartbeat_interval_s": 0.5,
        "heartbeat_ttl_s": 2,
        "pickup_timeout": 3.0,
        "ack_wait_s": 5.0,
        "drain_timeout_s": 5.0,
        "workspace_roots": (str(roots),),
        "work_root": str(tmp_path / "work"),
        "proxy_port": 0,
        "probe_port": -1,
        "proxy_probe_port": -1,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A nats-server that this test alone may stop, kill or freeze."""
    server = EmbeddedServer(tmp_path / "own-nats")
    server.start()
    yield server
    if server.pid:
        os.kill(server.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture
def settings(nats_server: EmbeddedServer, tmp_path: Path) -> Settings:
    return make_settings(nats_server.url, tmp_path)


@pytest.fixture
async def nc(settings: Settings) -> AsyncIterator[object]:
    """A NATS connection with the test's streams, consumer and bucket provisioned."""
    connection = await connect(settings, name="test")
    await provision(connection.jetstream(timeout=settings.request_timeout), settings)
    yield connection
    await connection.close()
