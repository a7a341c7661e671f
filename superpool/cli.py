"""The `superpool` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from bus.backoff import run_with_backoff
from bus.client import PoolClient, new_run_id
from bus.connection import connect
from bus.errors import SuperpoolError
from bus.provision import provision
from bus.settings import Settings
from bus.wire import RunError, RunResult, Status
from superpool import logs
from superpool.costs import add_costs_arguments, cmd_costs
from superpool.tables import format_result
from superpool.views import add_view_commands, cmd_drain, cmd_runs, cmd_status

# Exit code of `superpool run` per status, so scripts can branch on it.
EXIT_CODES = {
    Status.OK: 0,
    Status.RUN_FAILED: 1,
    Status.INVALID_REQUEST: 2,
    Status.POOL_BUSY: 3,
    Status.POOL_UNREACHABLE: 4,
    Status.RUN_TIMEOUT: 5,
    Status.CANCELLED: 6,
}


# `superpool run --retry` starts no attempt after this many seconds by default.
DEFAULT_RETRY_DEADLINE_S = 60.0

# Long-running commands log at INFO by default; one-shot commands only warn.
SERVER_COMMANDS = frozenset({"up", "runner", "proxy", "provision"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superpool",
        description="A shared pool of one-shot AI agent runners on NATS JetStream.",
    )
    parser.add_argument(
        "--nats-url", help="NATS server URL (default: SUPERPOOL_NATS_URL)"
    )
    parser.add_argument(
        "--log-level",
        help="DEBUG, INFO, WARNING or ERROR (default: INFO for servers, WARNING else)",
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up", help="run nats-server, runners and the MCP proxy here"
    )
    up.add_argument(
        "--runners", type=int, default=3, help="runners to start (default 3)"
    )
    up.add_argument("--slots", type=int, help="slots per runner (default 3)")
    up.add_argument("--data-dir", help="JetStream store (default ./.superpool)")
    up.add_argument("--nats-port", type=int, default=4222, help="0 picks a free port")
    up.add_argument("--proxy-port", type=int, help="MCP HTTP port (default 8765)")

    run = commands.add_parser(
        "run", help="run one prompt on the pool and print the result"
    )
    run.add_argument("prompt", nargs="?", help="prompt text; or give --prompt-file")
    run.add_argument("--task", required=True, help="short label, [A-Za-z0-9_-]{1,64}")
    run.add_argument(
        "--adapter",
        default="claude",
        help="claude, gemini, echo, or auto (the task label picks a model)",
    )
    run.add_argument("--model", dest="model_hint", help="model name or alias to prefer")
    run.add_argument("--prompt-file", help="file to read the prompt from")
    run.add_argument("--cwd-mode", choices=("isolated", "caller"), default="isolated")
    run.add_argument("--caller-cwd", help="working directory for --cwd-mode caller")
    run.add_argument(
        "--timeout", type=float, dest="timeout_s", help="run timeout in seconds"
    )
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument(
        "--retry",
        action="store_true",
        help="on POOL_BUSY retry with exponential backoff and full jitter",
    )
    run.add_argument(
        "--retry-deadline",
        type=float,
        default=DEFAULT_RETRY_DEADLINE_S,
        metavar="S",
        help="with --retry, start no attempt after S seconds (default %(default)g)",
    )

    add_view_commands(commands)

    result = commands.add_parser("result", help="print a finished run's result")
    result.add_argument("run_id")
    result.add_argument("--json", action="store_true", help="print JSON")

    cancel = commands.add_parser("cancel", help="cancel a queued or running run")
    cancel.add_argument("run_id")
    cancel.add_argument("--json", action="store_true", help="print JSON")

    runner = commands.add_parser("runner", help="run one runner until SIGTERM")
    runner.add_argument("--slots", type=int, help="runs at once (default 3)")
    runner.add_argument("--runner-id", help="default: <hostname>-<random>")
    runner.add_argument(
        "--provision", action="store_true", help="create or update the streams first"
    )

    proxy = commands.add_parser(
        "proxy", help="serve the MCP tools super_agent_run, _status, _result, _cancel"
    )
    proxy.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    proxy.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    proxy.add_argument("--port", type=int, help="HTTP port (default 8765)")
    proxy.add_argument(
        "--allowed-hosts",
        metavar="HOSTS",
        help="comma-separated Host header values accepted besides the loopback "
        "names, such as the Service name (default: SUPERPOOL_PROXY_ALLOWED_HOSTS)",
    )
    proxy.add_argument(
        "--token-file",
        metavar="PATH",
        help="require 'Authorization: Bearer <token>' over HTTP, with the token "
        "read from PATH (default: SUPERPOOL_PROXY_TOKEN_FILE)",
    )
    proxy.add_argument(
        "--stateless",
        action="store_true",
        default=None,
        help="serve HTTP without MCP sessions, for several replicas behind one "
        "Service (default: SUPERPOOL_PROXY_STATELESS_HTTP)",
    )

    commands.add_parser(
        "provision", help="create or update streams, consumer and bucket"
    )

    demo = commands.add_parser("demo", help="start a pool here and send it sample runs")
    demo.add_argument(
        "--data-dir", help="JetStream store (default: a temporary directory)"
    )

    costs = commands.add_parser(
        "costs", help="print model spend by caller, task and model for a time range"
    )
    add_costs_arguments(costs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    default_level = "INFO" if args.command in SERVER_COMMANDS else "WARNING"
    logs.configure(args.log_level or default_level, args.log_format)
    command = COMMANDS[args.command]
    try:
        settings = Settings.from_env(nats_url=args.nats_url)
        return asyncio.run(_with_signals(command, settings, args))
    except SuperpoolError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # A port in use or a directory that cannot be created.
        print(f"superpool {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _with_signals(
    command: Callable[[Settings, argparse.Namespace, asyncio.Event], Awaitable[int]],
    settings: Settings,
    args: argparse.Namespace,
) -> int:
    """Run a command with SIGINT and SIGTERM turned into a stop event."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await command(settings, args, stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def cmd_run(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    if (args.prompt is None) == (args.prompt_file is None):
        print(
            "superpool run: give a prompt or --prompt-file, not both", file=sys.stderr
        )
        return EXIT_CODES[Status.INVALID_REQUEST]
    run_id = new_run_id()
    async with PoolClient(settings, name="superpool-cli") as client:
        work = asyncio.ensure_future(
            run_with_backoff(
                client,
                args.task,
                deadline_s=args.retry_deadline if args.retry else 0.0,
                on_busy=_report_busy,
                run_id=run_id,
                prompt_text=args.prompt,
                prompt_file=args.prompt_file,
                adapter=args.adapter,
                cwd_mode=args.cwd_mode,
                caller_cwd=args.caller_cwd,
                model_hint=args.model_hint,
                timeout_s=args.timeout_s,
            )
        )
        await _until_stopped(asyncio.shield(work), stop)
        if not work.done():
            # Ctrl-C or SIGTERM: stop waiting and cancel the run on the pool,
            # so it does not hold a slot for nobody.
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            result = await _cancel_quietly(client, run_id)
            _print_result(result, args.json)
            return 130
        result = work.result()
    _print_result(result, args.json)
    return EXIT_CODES[result.status]


async def _cancel_quietly(client: PoolClient, run_id: str) -> RunResult:
    try:
        return await client.cancel(run_id)
    except SuperpoolError as exc:
        return RunResult(
            run_id=run_id,
            status=Status.CANCELLED,
            error=RunError(code=Status.CANCELLED, message=f"stopped waiting; {exc}"),
        )


async def _report_busy(attempt: int, result: RunResult, delay_s: float) -> None:
    print(
        f"superpool run: POOL_BUSY on attempt {attempt}; retrying in {delay_s:.1f} s",
        file=sys.stderr,
    )


async def cmd_result(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    async with PoolClient(settings, name="superpool-cli") as client:
        result = await client.result(args.run_id)
    if result is None:
        print(f"run {args.run_id} has no result yet (or is unknown)", file=sys.stderr)
        return 1
    _print_result(result, args.json)
    return EXIT_CODES[result.status]


async def cmd_cancel(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    async with PoolClient(settings, name="superpool-cli") as client:
        result = await client.cancel(args.run_id)
    _print_result(result, args.json)
    return EXIT_CODES[result.status]


def _print_result(result: RunResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(msgspec.to_builtins(result), indent=2))
    else:
        print(format_result(result))


async def cmd_provision(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    nc = await connect(settings, name="superpool-provision")
    try:
        await provision(nc.jetstream(timeout=settings.request_timeout), settings)
    finally:
        await nc.close()
    print(
        f"provisioned {settings.runs_stream}, {settings.consumer}, "
        f"{settings.results_stream} and {settings.registry_bucket} at "
        f"{settings.nats_url}"
    )
    return 0


async def cmd_runner(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    from runner.runner import Runner

    if args.provision:
        await cmd_provision(settings, args, stop)
    async with Runner(settings, runner_id=args.runner_id, slots=args.slots) as runner:
        await _until_stopped(runner.wait_stopped(), stop)
    return 0


async def cmd_proxy(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    from mcp_proxy.server import serve

    overrides = {
        "proxy_allowed_hosts": args.allowed_hosts,
        "proxy_token_file": args.token_file,
        "proxy_stateless_http": args.stateless,
    }
    settings = settings.replace(
        **{name: value for name, value in overrides.items() if value is not None}
    )
    await _until_stopped(
        serve(settings, args.transport, host=args.host, port=args.port), stop
    )
    return 0


async def cmd_up(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    from superpool.local import run_local_pool

    await run_local_pool(settings, args, stop)
    return 0


async def cmd_demo(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    from superpool.demo import run_demo

    return await run_demo(settings, args, stop)


async def _until_stopped(work: Awaitable[object], stop: asyncio.Event) -> None:
    """Await `work` until it ends or `stop` is set, then cancel what is left."""
    work_task = asyncio.ensure_future(work)
    stop_task = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait(
        {work_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
    )
    for task in (work_task, stop_task):
        if task not in done:
            task.cancel()
    await asyncio.gather(work_task, stop_task, return_exceptions=True)
    if work_task in done:
        work_task.result()


COMMANDS: dict[
    str, Callable[[Settings, argparse.Namespace, asyncio.Event], Awaitable[int]]
] = {
    "up": cmd_up,
    "run": cmd_run,
    "status": cmd_status,
    "runs": cmd_runs,
    "drain": cmd_drain,
    "result": cmd_result,
    "cancel": cmd_cancel,
    "runner": cmd_runner,
    "proxy": cmd_proxy,
    "provision": cmd_provision,
    "demo": cmd_demo,
    "costs": cmd_costs,
}


if __name__ == "__main__":
    sys.exit(main())
