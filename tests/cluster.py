"""A 3-node nats-server cluster on loopback, for tests that kill a stream leader."""

from __future__ import annotations

import socket
from pathlib import Path

from bus.server import EmbeddedServer

CLUSTER_NAME = "superpool-test"


def free_port() -> int:
    # NOTE: the port is free when this returns; another process could take it
    # before nats-server binds it, which would fail the start with a clear error.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """Three JetStream servers joined by routes, each with its own store."""

    def __init__(self, root: Path, size: int = 3) -> None:
        route_ports = [free_port() for _ in range(size)]
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in route_ports)
        self.servers: dict[str, EmbeddedServer] = {}
        for index, port in enumerate(route_ports):
            name = f"n{index + 1}"
            self.servers[name] = EmbeddedServer(
                root / name,
                extra_args=(
                    "--server_name",
                    name,
                    "--cluster_name",
                    CLUSTER_NAME,
                    "--cluster",
                    f"nats://127.0.0.1:{port}",
                    "--routes",
                    routes,
                ),
            )

    @property
    def url(self) -> str:
        """Return every member's client URL, comma-separated, as settings take it."""
        return ",".join(
            server.url for server in self.servers.values() if server.running
        )

    def start(self) -> None:
        for server in self.servers.values():
            server.start()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def kill(self, name: str) -> None:
        self.servers[name].kill()

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
