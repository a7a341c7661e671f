"""The NATS micro service `superpool` that every runner registers.

`nats micro ls`, `nats micro info superpool` and `nats micro stats superpool`
then list the runners, their version and their endpoint stats. The
endpoints answer from the registry and from the runner's own state, never by
waiting on a run: nats-py serves one request at a time per service instance,
so a slow handler would stall every request behind it.

Endpoints (subjects under `<subject_prefix>.svc.`):
    status   the pool summary: runners, slots busy and total, queue depth
    runs     the runs in flight on every runner
    runner   this runner's own state (each runner answers its own subject)
    drain    ask this runner to stop taking work and exit when idle
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig

if TYPE_CHECKING:
    from runner.runner import Runner

logger = logging.getLogger(__name__)

# Endpoints that any runner may answer share one queue group.
SHARED_QUEUE = "superpool-svc"


def service_subject(prefix: str, endpoint: str, runner_id: str = "") -> str:
    base = f"{prefix}.svc.{endpoint}"
    return f"{base}.{runner_id}" if runner_id else base


async def start_service(runner: Runner) -> Service:
    """Register the micro service and its endpoints for `runner`."""
    settings = runner.settings
    prefix = settings.subject_prefix
    service = await add_service(
        runner.nc,
        config=ServiceConfig(
            name=settings.service_name,
            version=runner.version,
            description="superpool runner: one-shot AI agent runs from JetStream",
            metadata={"runner_id": runner.runner_id, "slots": str(runner.slots)},
            queue_group=SHARED_QUEUE,
        ),
    )

    async def status(request: Request) -> None:
        pool = await runner.registry.status()
        await request.respond(msgspec.json.encode(pool))

    async def runs(request: Request) -> None:
        pool = await runner.registry.status()
        in_flight = [
            {"runner_id": state.runner_id, **msgspec.to_builtins(run)}
            for state in pool.runners
            for run in state.run_details
        ]
        await request.respond(msgspec.json.encode(in_flight))

    async def own_state(request: Request) -> None:
        await request.respond(msgspec.json.encode(runner.state()))

    async def drain(request: Request) -> None:
        runner.request_drain()
        await request.respond(b'{"draining": true}')

    endpoints = [
        EndpointConfig(
            name="status", handler=status, subject=service_subject(prefix, "status")
        ),
        EndpointConfig(
            name="runs", handler=runs, subject=service_subject(prefix, "runs")
        ),
        EndpointConfig(
            name="runner",
            handler=own_state,
            subject=service_subject(prefix, "runner", runner.runner_id),
        ),
        EndpointConfig(
            name="drain",
            handler=drain,
            subject=service_subject(prefix, "drain", runner.runner_id),
        ),
    ]
    for endpoint in endpoints:
        await service.add_endpoint(endpoint)
    return service
