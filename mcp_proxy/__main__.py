"""Command line: `python -m mcp_proxy --transport stdio|http [--host H] [--port P]`.

The HTTP options override their `SUPERPOOL_PROXY_*` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from bus.errors import ConfigError
from bus.settings import Settings
from mcp_proxy.server import TRANSPORTS, ClientFactory, serve

logger = logging.getLogger("mcp_proxy")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m mcp_proxy",
        description="Serve the superpool tools, super_agent_run and its helpers, "
        "over MCP.",
        epilog="Pool settings come from SUPERPOOL_* environment variables.",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="stdio",
        help="stdio, or streamable HTTP at the path /mcp (default: %(default)s)",
    )
    parser.add_argument(
        "--host", help="HTTP address to bind (default: SUPERPOOL_PROXY_HOST)"
    )
    parser.add_argument(
        "--port",
        type=int,
        help="HTTP port to bind, 0 for any free one (default: SUPERPOOL_PROXY_PORT)",
    )
    parser.add_argument(
        "--allowed-hosts",
        metavar="HOSTS",
        help="comma-separated Host header values to accept besides the loopback "
        "names, such as a Service name (default: SUPERPOOL_PROXY_ALLOWED_HOSTS)",
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="require 'Authorization: Bearer <token>' over HTTP, with the token "
        "read from PATH (default: SUPERPOOL_PROXY_TOKEN_FILE)",
    )
    parser.add_argument(
        "--stateless",
        action="store_true",
        default=None,
        help="serve HTTP without MCP sessions, for several replicas behind one "
        "Service (default: SUPERPOOL_PROXY_STATELESS_HTTP)",
    )
    parser.add_argument(
        "--port-file",
        metavar="PATH",
        help="write the bound HTTP port to PATH once the server accepts connections",
    )
    parser.add_argument(
        "--client-factory",
        metavar="MODULE:NAME",
        help="build the pool client with this callable, which takes the settings, "
        "instead of bus.client.PoolClient (for tests)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="level of the log on stderr (default: %(default)s)",
    )
    return parser.parse_args(argv)


def load_factory(spec: str) -> ClientFactory:
    """Import the callable named by "module:name".

    Raises:
        ConfigError: the value is malformed or names nothing callable.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(
            "client_factory", f"--client-factory {spec!r} is invalid: use MODULE:NAME"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            "client_factory", f"--client-factory {spec!r} was not found: {exc}"
        ) from None
    if not callable(factory):
        raise ConfigError(
            "client_factory", f"--client-factory {spec!r} is not callable"
        )
    return factory


def write_port_file(path: str, url: str) -> None:
    """Write the port of `url` to `path` so that no reader sees a partial file."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="ascii") as file:
        file.write(f"{urlsplit(url).port}\n")
    os.replace(temporary, path)


async def run(args: argparse.Namespace, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop the server and the pool client."""
    factory = load_factory(args.client_factory) if args.client_factory else None
    on_listening = None
    if args.port_file:
        port_file: str = args.port_file

        def on_listening(url: str) -> None:
            write_port_file(port_file, url)

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopping = False

    def stop() -> None:
        nonlocal stopping
        stopping = True
        task.cancel()

    # asyncio.run turns SIGINT into KeyboardInterrupt itself; SIGTERM needs
    # a handler so that `serve` gets to close its connections.
    loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        await serve(
            settings,
            args.transport,
            args.host,
            args.port,
            client_factory=factory,
            on_listening=on_listening,
        )
    except asyncio.CancelledError:
        if not stopping:
            raise
        logger.info("proxy stopped on SIGTERM")
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proxy and return the process exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, stream=sys.stderr)
    try:
        settings = Settings.from_env(
            proxy_allowed_hosts=args.allowed_hosts,
            proxy_token_file=args.token_file,
            proxy_stateless_http=args.stateless,
        )
        asyncio.run(run(args, settings))
    except ConfigError as exc:
        print(f"ConfigError: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: the proxy could not start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
