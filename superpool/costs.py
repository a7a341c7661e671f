"""`superpool costs`: model spend from the run registry, grouped and summed.

Every finished run's record keeps its result, with the tokens summed over all
of its model calls and `cost_usd` priced from the model catalog. This command
reads those records, keeps the runs whose `finished_at` lies in the range,
and sums runs, tokens and cost per group of caller, task and model.

NOTE: the registry bucket keeps records for 7 days (its max age), so older
spend is gone; export it elsewhere for longer accounting.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bus.client import PoolClient
from bus.settings import Settings
from bus.wire import RunRecord, RunResult
from superpool.tables import format_table

GROUP_FIELDS = ("caller", "task", "model")
DEFAULT_SINCE = "24h"
# A duration back from now, such as "90s", "30m", "24h", "7d" or "2w".
DURATION_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Shown for a run that no caller name was sent with.
NO_NAME = "-"


def add_costs_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `superpool costs` to its subcommand parser."""
    parser.add_argument(
        "--since",
        type=parse_moment,
        default=DEFAULT_SINCE,
        help="start of the range: a duration back from now (90s, 30m, 24h, 7d, 2w) "
        "or an ISO 8601 time, local time without an offset (default 24h)",
    )
    parser.add_argument(
        "--until",
        type=parse_moment,
        default=None,
        help="end of the range, in the same forms (default: now)",
    )
    parser.add_argument(
        "--by",
        type=parse_group,
        default=GROUP_FIELDS,
        help="comma-separated grouping, any of caller, task and model "
        "(default caller,task,model)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def parse_moment(text: str) -> float:
    """Return the Unix time that a duration back from now or an ISO time names.

    Raises:
        argparse.ArgumentTypeError: `text` is neither form.
    """
    match = DURATION_PATTERN.match(text.strip())
    if match:
        return time.time() - float(match[1]) * UNIT_SECONDS[match[2]]
    try:
        return datetime.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration such as 24h nor an ISO 8601 time "
            "such as 2025-01-31T12:00:00+00:00"
        ) from None


def parse_group(text: str) -> tuple[str, ...]:
    """Return the grouping fields named in comma-separated `text`.

    Raises:
        argparse.ArgumentTypeError: a name is not caller, task or model.
    """
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in GROUP_FIELDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--by {text!r} is invalid: use a comma-separated list of "
            f"{', '.join(GROUP_FIELDS)}"
        )
    return tuple(dict.fromkeys(names))


@dataclass
class CostGroup:
    """Runs, tokens and cost of one group."""

    key: dict[str, str]
    runs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    costs: list[float] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        # fsum keeps the sum of many small prices exact to the last bit.
        return math.fsum(self.costs)

    def add(self, result: RunResult) -> None:
        self.runs += 1
        self.input_tokens += result.usage.input_tokens
        self.output_tokens += result.usage.output_tokens
        self.costs.append(result.cost_usd)

    def to_dict(self) -> dict[str, object]:
        return {
            **self.key,
            "runs": self.runs,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }


def summarize(
    records: Iterable[RunRecord],
    since: float,
    until: float,
    by: Sequence[str] = GROUP_FIELDS,
) -> list[CostGroup]:
    """Group the results that finished in [since, until) by `by`, costliest first."""
    groups: dict[tuple[str, ...], CostGroup] = {}
    for record in records:
        result = record.result
        if result is None or not since <= result.finished_at < until:
            continue
        key = {name: _group_value(result, name) for name in by}
        group = groups.setdefault(tuple(key.values()), CostGroup(key))
        group.add(result)
    return sorted(
        groups.values(),
        key=lambda group: (-group.cost_usd, tuple(group.key.values())),
    )


def total(groups: Iterable[CostGroup]) -> CostGroup:
    """Return one group that adds up `groups`."""
    summed = CostGroup({})
    for group in groups:
        summed.runs += group.runs
        summed.input_tokens += group.input_tokens
        summed.output_tokens += group.output_tokens
        summed.costs.extend(group.costs)
    return summed


def format_costs(groups: Sequence[CostGroup], by: Sequence[str]) -> str:
    """Lay out `groups` as a table with a total line."""
    headers = (*by, "runs", "tokens in", "tokens out", "cost USD")
    rows = [_row(group, by) for group in groups]
    rows.append(_row(total(groups), by, label="total"))
    return format_table(headers, rows)


def _row(group: CostGroup, by: Sequence[str], label: str = "") -> list[object]:
    keys = [
        group.key.get(name, label if index == 0 else "")
        for index, name in enumerate(by)
    ]
    return [
        *keys,
        group.runs,
        group.input_tokens,
        group.output_tokens,
        f"{group.cost_usd:.6f}",
    ]


def _group_value(result: RunResult, name: str) -> str:
    if name == "model":
        return result.model or NO_NAME
    value: str = getattr(result, name)
    return value or NO_NAME


async def cmd_costs(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    """Print the spend in the range of `args`, as a table or as JSON."""
    until = args.until if args.until is not None else time.time()
    async with PoolClient(settings, name="superpool-costs") as client:
        records = await client.registry.runs()
    groups = summarize(records, args.since, until, args.by)
    if args.json:
        document = {
            "since": args.since,
            "until": until,
            "by": list(args.by),
            "groups": [group.to_dict() for group in groups],
            "total": total(groups).to_dict(),
        }
        print(json.dumps(document, indent=2))
    else:
        print(format_costs(groups, args.by))
    return 0
