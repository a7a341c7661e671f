"""Command line: `python -m bench [--quick] [--output PATH] [--no-peers]`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.report import render, write
from bench.suite import FULL, QUICK, Suite

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure superpool's dispatch overhead against the NATS floor "
        "and against peer task queues, and print a Markdown table.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small counts (under 3 minutes on 2 cores); prints the table and "
        "writes no file unless --output is given",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"Markdown file whose generated section is replaced (default for a "
        f"full run: {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="skip Celery, arq and taskiq"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    output = args.output or (None if args.quick else DEFAULT_OUTPUT)
    with tempfile.TemporaryDirectory(prefix="superpool-bench-") as scratch:
        suite = Suite(counts, Path(scratch), mode, peers=not args.no_peers)
        report = asyncio.run(suite.run())
    text = render(report)
    print(text)
    if output is not None:
        write(output, text)
        print(f"bench: wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
