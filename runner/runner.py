"""The runner process: heartbeats, a pull loop sized to free slots, graceful stop.

    async with Runner(settings) as runner:
        await runner.wait_stopped()

Stopping (`stop()`, also on leaving the `async with`) marks the runner
draining, so admission stops counting its slots, stops pulling, lets running
runs finish within `drain_timeout_s`, cancels the rest and naks their
messages so another runner takes them at once, removes the heartbeat key and
drains the NATS connection.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import socket
import time
import uuid
from importlib import metadata

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError
from nats.micro.service import Service

from bus.connection import close as close_connection
from bus.connection import connect
from bus.credentials import load_provider_keys
from bus.errors import ConfigError, PoolError, SuperpoolError
from bus.jetstream import decode_pub_ack
from bus.observability import serve_probes
from bus.settings import Settings
from bus.subjects import RUN_ID_PATTERN, cancel_subjects, result_subject
from bus.wire import RunInFlight, RunnerState, RunRequest, RunResult, now
from registry.registry import RunRegistry
from registry.writes import serve_writes
from runner.catalog import Catalog
from runner.execution import handle_message
from runner.exhaustion import ADVISORY_QUEUE, advisory_subject, on_max_deliveries
from runner.metrics import RunnerMetrics
from runner.puller import STATUS_HEADER, Puller
from runner.service import start_service

logger = logging.getLogger(__name__)

# The pull loop wakes at least this often to drop pull requests the server lost.
PULL_LOOP_WAKE_S = 1.0
# Status that the server sends when no stream captures a publish.
NO_RESPONDERS_STATUS = "503"
# Heartbeat failures are logged once per this many seconds.
HEARTBEAT_WARN_EVERY_S = 10.0


def default_runner_id() -> str:
    """Return `<host>-<random>`: the pod name on Kubernetes, unique per process."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:60]
    return f"{host}-{uuid.uuid4().hex[:6]}"


def package_version() -> str:
    try:
        return metadata.version("superagent-pool")
    except metadata.PackageNotFoundError:
        # The micro service needs a semantic version.
        return "0.0.0"


class Runner:
    """Pull runs from the pool and execute up to `slots` of them at once."""

    def __init__(
        self,
        settings: Settings,
        *,
        runner_id: str | None = None,
        slots: int | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.settings = settings
        self.runner_id = runner_id or default_runner_id()
        if not re.match(RUN_ID_PATTERN, self.runner_id):
            raise ConfigError(
                "runner_id",
                f"runner id {self.runner_id!r} is invalid: use letters, digits, "
                "'_' and '-', because it is part of NATS subjects and KV keys",
            )
        self.slots = slots or settings.slots
        # Loaded at start, so a broken catalog file stops the runner at once.
        self.catalog = catalog or Catalog.load(settings.catalog_path or None)
        self.running: dict[str, RunRequest] = {}
        # The adapter task of each running run, which a cancel request stops.
        self.work: dict[str, asyncio.Task[RunResult]] = {}
        self.cancel_requested: set[str] = set()
        # When each running run started and which model it uses, for status views.
        self.run_started: dict[str, float] = {}
        self.run_models: dict[str, str] = {}
        self.version = package_version()
        self.metrics = RunnerMetrics(self.runner_id, self.slots)
        self._service: Service | None = None
        self.probe_url = ""
        self.probes_started = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        self.counters: collections.Counter[str] = collections.Counter()
        # Most messages this runner held at once, for tests and metrics.
        self.max_held = 0
        self._held = 0
        self._handlers: set[asyncio.Task[None]] = set()
        self._state = "ready"
        self._started_at = 0.0
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._registry: RunRegistry | None = None
        self._puller: Puller | None = None
        self._main: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._last_heartbeat_warning = 0.0
        # Acknowledgements of stored results arrive on `<stored_inbox>.<run_id>`.
        self.stored_inbox = ""

    # The parts that execution uses.

    @property
    def nc(self) -> NATS:
        assert self._nc is not None, "runner not started"
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "runner not started"
        return self._js

    @property
    def registry(self) -> RunRegistry:
        assert self._registry is not None, "runner not started"
        return self._registry

    def result_subject(self, run_id: str) -> str:
        return result_subject(self.settings, run_id)

    @property
    def ready(self) -> bool:
        return self._state == "ready" and self._nc is not None and self._nc.is_connected

    # Lifecycle

    async def __aenter__(self) -> Runner:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, check the pool's resources and begin pulling.

        Raises:
            PoolError: NATS is unreachable or the pool is not provisioned.
            SuperpoolError: the runner was started before.
        """
        if self._main is not None:
            raise SuperpoolError(f"runner {self.runner_id} was already started")
        load_provider_keys(self.settings)
        self._nc = await connect(
            self.settings,
            name=f"superpool-runner-{self.runner_id}",
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self._js = self._nc.jetstream(timeout=self.settings.request_timeout)
        await self._check_provisioned()
        self._registry = await RunRegistry.open(self._nc, self.settings)
        self._puller = Puller(
            self._nc, self.settings.runs_stream, self.settings.consumer, self._accept
        )
        await self._puller.start()
        await self._nc.subscribe(
            cancel_subjects(self.settings, self.runner_id), cb=self._on_cancel
        )
        self.stored_inbox = self._nc.new_inbox()
        await self._nc.subscribe(f"{self.stored_inbox}.*", cb=self._on_stored)
        await self._nc.subscribe(
            advisory_subject(self.settings.runs_stream, self.settings.consumer),
            queue=ADVISORY_QUEUE,
            cb=self._on_max_deliveries,
        )
        await serve_writes(self._nc, self._js, self._registry, self.settings)
        self._service = await start_service(self)
        self._started_at = now()
        await self._heartbeat_once()
        self._main = asyncio.create_task(self._serve(), name=f"runner-{self.runner_id}")
        if self.settings.ack_wait_s <= self.settings.heartbeat_ttl_s:
            # A redelivery then finds a dead runner's heartbeat still alive,
            # nakks it as owned and uses up max_deliver early.
            logger.warning(
                "ack_wait_s (%g) is not above heartbeat_ttl_s (%g): runs of a "
                "runner that died may fail as lost before another runner takes "
                "them over; raise SUPERPOOL_ACK_WAIT_S",
                self.settings.ack_wait_s,
                self.settings.heartbeat_ttl_s,
            )
        logger.info(
            "runner started runner=%s slots=%d nats=%s stream=%s consumer=%s "
            "ack_wait_s=%g drain_timeout_s=%g",
            self.runner_id,
            self.slots,
            self.settings.nats_url,
            self.settings.runs_stream,
            self.settings.consumer,
            self.settings.ack_wait_s,
            self.settings.drain_timeout_s,
        )

    async def _check_provisioned(self) -> None:
        try:
            await self.js.consumer_info(
                self.settings.runs_stream, self.settings.consumer
            )
        except NotFoundError:
            await self.nc.close()
            raise PoolError(
                f"consumer {self.settings.consumer} on stream "
                f"{self.settings.runs_stream} does not exist; run 'superpool provision'"
            ) from None

    async def _serve(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pull_loop())
                group.create_task(self._heartbeat_loop())
                if self.settings.probe_port >= 0:
                    group.create_task(self._serve_probes())
        except* Exception:
            logger.exception("runner failed runner=%s", self.runner_id)
            raise

    async def wait_stopped(self) -> None:
        """Wait until the runner stopped, or its background work failed."""
        assert self._main is not None, "runner not started"
        stopped = asyncio.create_task(self._stopped.wait())
        await asyncio.wait({stopped, self._main}, return_when=asyncio.FIRST_COMPLETED)
        if self._stopping.is_set():
            # stop() cancels the background work before it removes the
            # heartbeat key, so wait for the whole stop.
            await stopped
            return
        stopped.cancel()
        if self._main.done() and not self._main.cancelled():
            self._main.result()

    async def stop(self) -> None:
        """Drain and stop; safe to call more than once."""
        if self._stopping.is_set() or self._main is None:
            await self._stopped.wait() if self._main is not None else None
            return
        self._stopping.set()
        self._state = "draining"
        await self._heartbeat_once()
        if self._puller is not None:
            await self._puller.stop()
        await self._drain_handlers()
        self._main.cancel()
        await asyncio.gather(self._main, return_exceptions=True)
        await self._remove_heartbeat()
        if self._service is not None:
            await self._service.stop()
        await close_connection(self.nc)
        self._stopped.set()
        logger.info(
            "runner stopped runner=%s runs=%s max_held=%d",
            self.runner_id,
            dict(self.counters),
            self.max_held,
        )

    @property
    def healthy(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def _serve_probes(self) -> None:
        def listening(url: str) -> None:
            self.probe_url = url
            self.probes_started.set()

        await serve_probes(
            self.metrics.registry,
            lambda: self.healthy,
            lambda: self.ready,
            self.settings.probe_host,
            self.settings.probe_port,
            on_listening=listening,
        )

    def request_drain(self) -> None:
        """Stop taking work and stop once idle, as `superpool drain` asks."""
        if self._drain_task is None and not self._stopping.is_set():
            logger.info("runner drain requested runner=%s", self.runner_id)
            self._drain_task = asyncio.get_running_loop().create_task(self.stop())

    async def _drain_handlers(self) -> None:
        if not self._handlers:
            return
        logger.info(
            "runner draining runner=%s running=%d timeout_s=%g",
            self.runner_id,
            len(self._handlers),
            self.settings.drain_timeout_s,
        )
        _, pending = await asyncio.wait(
            self._handlers, timeout=self.settings.drain_timeout_s
        )
        for task in pending:
            task.cancel()
        if pending:
            logger.warning(
                "runs cancelled at drain timeout runner=%s count=%d",
                self.runner_id,
                len(pending),
            )
            await asyncio.gather(*pending, return_exceptions=True)

    # Pulling

    def _accept(self, msg: Msg) -> None:
        if self._stopping.is_set():
            asyncio.get_running_loop().create_task(self._nak(msg))
            return
        self._held += 1
        self.max_held = max(self.max_held, self._held)
        self.metrics.slots_busy.set(self._held)
        if msg.metadata.num_delivered and msg.metadata.num_delivered > 1:
            self.metrics.redeliveries.inc()
        task = asyncio.get_running_loop().create_task(self._handle(msg))
        self._handlers.add(task)
        task.add_done_callback(self._release)

    def _release(self, task: asyncio.Task[None]) -> None:
        if task not in self._handlers:
            return
        self._handlers.discard(task)
        self._held -= 1
        self.metrics.slots_busy.set(self._held)
        if self._puller is not None:
            self._puller.changed.set()

    async def release_slot(self) -> None:
        """Free the slot of the calling handler, whose run is over, and pull again.

        The new pull request leaves in the same write as the run's result,
        where the pull loop would send it in a write of its own.
        """
        task = asyncio.current_task()
        if task is None or task not in self._handlers:
            return
        self._release(task)
        await self._top_up()

    async def _top_up(self) -> None:
        """Open pull requests for the free slots that no request covers yet."""
        assert self._puller is not None
        self._puller.prune()
        free = self.slots - self._held - self._puller.requested
        if free > 0 and self.ready:
            try:
                await self._puller.request(free)
            except Exception:
                logger.warning("pull request failed runner=%s", self.runner_id)

    async def _handle(self, msg: Msg) -> None:
        try:
            await handle_message(self, msg)
        except asyncio.CancelledError:
            # Cancelled at drain timeout: give the run back at once.
            await asyncio.shield(self._nak(msg))
            raise
        except (PoolError, TimeoutError, nats.errors.Error) as exc:
            # NATS failed mid-run; the message comes back after ack_wait.
            logger.warning(
                "run left unacked after a NATS failure runner=%s error=%r",
                self.runner_id,
                exc,
            )
        except Exception:
            logger.exception("message handling failed runner=%s", self.runner_id)

    async def _nak(self, msg: Msg) -> None:
        try:
            await msg.nak()
        except Exception:
            logger.warning(
                "nak failed runner=%s subject=%s", self.runner_id, msg.subject
            )

    async def _pull_loop(self) -> None:
        assert self._puller is not None
        puller = self._puller
        while not self._stopping.is_set():
            await self._top_up()
            puller.changed.clear()
            try:
                async with asyncio.timeout(PULL_LOOP_WAKE_S):
                    await puller.changed.wait()
            except TimeoutError:
                pass

    async def _on_cancel(self, msg: Msg) -> None:
        run_id = msg.subject.rsplit(".", 1)[-1]
        work = self.work.get(run_id)
        if work is None:
            await msg.respond(b'{"cancelled": false, "reason": "not running here"}')
            return
        logger.info("run cancel requested run_id=%s runner=%s", run_id, self.runner_id)
        self.cancel_requested.add(run_id)
        work.cancel()
        await msg.respond(b'{"cancelled": true}')

    async def _on_stored(self, msg: Msg) -> None:
        """Log a result that the results stream did not store."""
        run_id = msg.subject.rsplit(".", 1)[-1]
        if msg.headers and msg.headers.get(STATUS_HEADER) == NO_RESPONDERS_STATUS:
            error = f"no stream captures {result_subject(self.settings, run_id)}"
        else:
            try:
                decode_pub_ack(msg.data)
                return
            except (APIError, msgspec.DecodeError) as exc:
                error = repr(exc)
        self.counters["results_not_stored"] += 1
        logger.warning(
            "result not stored on the results stream run_id=%s error=%s; the run "
            "record keeps it",
            run_id,
            error,
        )

    async def _on_max_deliveries(self, msg: Msg) -> None:
        try:
            await on_max_deliveries(self, msg)
        except Exception:
            logger.exception("max-deliveries advisory failed runner=%s", self.runner_id)

    async def _on_disconnected(self) -> None:
        if not self.nc.is_closed:
            logger.warning("runner lost NATS runner=%s; not ready", self.runner_id)

    async def _on_reconnected(self) -> None:
        logger.warning("runner reconnected runner=%s", self.runner_id)
        if self._puller is not None:
            # Pull requests do not survive a reconnect to a restarted server.
            await self._puller.forget_all()

    # Heartbeats

    def state(self) -> RunnerState:
        details = tuple(
            RunInFlight(
                run_id=run_id,
                task=request.task,
                adapter=request.adapter,
                model=self.run_models.get(run_id, ""),
                started_at=self.run_started.get(run_id, 0.0),
            )
            for run_id, request in self.running.items()
        )
        return RunnerState(
            runner_id=self.runner_id,
            slots=self.slots,
            busy=self._held,
            runs=tuple(self.running),
            run_details=details,
            state="ready" if self._state == "ready" else "draining",
            version=self.version,
            host=socket.gethostname(),
            started_at=self._started_at,
            heartbeat_at=now(),
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            await self._heartbeat_once()

    async def _heartbeat_once(self) -> None:
        if self._registry is None:
            return
        try:
            await self._registry.heartbeat(self.state())
        except Exception as exc:
            moment = time.monotonic()
            if moment - self._last_heartbeat_warning >= HEARTBEAT_WARN_EVERY_S:
                self._last_heartbeat_warning = moment
                logger.warning(
                    "heartbeat failed runner=%s error=%r", self.runner_id, exc
                )

    async def _remove_heartbeat(self) -> None:
        if self._registry is None:
            return
        try:
            await self._registry.remove_runner(self.runner_id)
        except Exception as exc:
            logger.warning(
                "heartbeat key not removed runner=%s error=%r", self.runner_id, exc
            )
