"""Operator views: `superpool status`, `superpool runs` and `superpool drain`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import msgspec
import nats

from bus.client import PoolClient
from bus.errors import PoolError
from bus.settings import Settings
from bus.wire import RunRecord
from runner.service import service_subject
from superpool.tables import format_runs, format_status

# ANSI: move the cursor home and clear the screen, for `status --watch`.
CLEAR_SCREEN = "\033[H\033[2J"


def add_view_commands(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser(
        "status", help="print runners, slots and runs in flight"
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--watch", action="store_true", help="refresh in place")
    status.add_argument(
        "--interval", type=float, default=2.0, help="seconds between refreshes"
    )

    runs = commands.add_parser("runs", help="print recent runs, newest first")
    runs.add_argument("--status", help="only runs with this status, such as RUN_FAILED")
    runs.add_argument("--task", help="only runs with this task label")
    runs.add_argument("--caller", help="only runs of this caller")
    runs.add_argument(
        "--limit", type=int, default=20, help="rows to print (default 20)"
    )
    runs.add_argument("--json", action="store_true", help="print JSON")

    drain = commands.add_parser(
        "drain", help="ask one runner to stop taking work and exit when idle"
    )
    drain.add_argument("runner_id")


async def cmd_status(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    async with PoolClient(settings, name="superpool-cli") as client:
        while True:
            status = await client.status()
            if args.json:
                print(json.dumps(msgspec.to_builtins(status), indent=2), flush=True)
            else:
                prefix = CLEAR_SCREEN if args.watch else ""
                print(prefix + format_status(status), flush=True)
            if not args.watch:
                return 0
            try:
                await asyncio.wait_for(stop.wait(), args.interval)
                return 0
            except TimeoutError:
                continue


def select_runs(records: list[RunRecord], args: argparse.Namespace) -> list[RunRecord]:
    """Filter records by status, task and caller; newest first, at most `limit`."""
    chosen = []
    for record in records:
        status = record.result.status if record.result else record.state
        if args.status and status != args.status:
            continue
        if args.task and record.task != args.task:
            continue
        if args.caller and record.caller != args.caller:
            continue
        chosen.append(record)
    chosen.sort(key=lambda record: record.updated_at, reverse=True)
    return chosen[: args.limit]


async def cmd_runs(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    async with PoolClient(settings, name="superpool-cli") as client:
        records = select_runs(await client.registry.runs(), args)
    if args.json:
        print(json.dumps(msgspec.to_builtins(records), indent=2))
    else:
        print(format_runs(records))
    return 0


async def cmd_drain(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    async with PoolClient(settings, name="superpool-cli") as client:
        if client.nc is None:
            raise PoolError(f"not connected to NATS at {settings.nats_url}")
        subject = service_subject(settings.subject_prefix, "drain", args.runner_id)
        try:
            await client.nc.request(subject, b"", timeout=settings.request_timeout)
        except nats.errors.NoRespondersError:
            print(f"runner {args.runner_id} is not running", file=sys.stderr)
            return 1
    print(f"runner {args.runner_id} is draining: it finishes its runs and exits")
    return 0
