"""A redis-server child process on a free loopback port, for Celery and arq."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.harness import spawn

# Starting redis-server takes a few milliseconds; this bounds a slow disk.
START_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """redis-server with its own configuration: loopback only, no persistence."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server")

    async def start(self) -> str:
        """Start the server and return its URL once it replies to PING.

        Raises:
            FileNotFoundError: redis-server is not installed.
            TimeoutError: the server did not reply in time.
        """
        binary = self.binary()
        if binary is None:
            raise FileNotFoundError(
                "redis-server not found: install it with "
                "'apt-get install -y redis-server'"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.data_dir / "redis.conf"
        config.write_text(
            f'bind 127.0.0.1\nport {self.port}\nsave ""\nappendonly no\n'
            f"dir {self.data_dir}\nprotected-mode yes\ndaemonize no\n"
        )
        self.process = spawn(
            [binary, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await self._wait_ready()
        return self.url

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                await writer.drain()
                line = await reader.readline()
                writer.close()
                await writer.wait_closed()
                if line.startswith(b"+PONG"):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"redis-server did not start within {START_TIMEOUT_S} s"
                )
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait, 10)
        self.process = None
