"""Plain-text tables for the command line."""

from __future__ import annotations

import time
from collections.abc import Sequence

from bus.wire import RunResult
from registry.registry import PoolStatus


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Lay out `rows` under `headers` in columns as wide as their widest cell."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [
            max(width, len(cell)) for width, cell in zip(widths, row, strict=True)
        ]
    lines = [
        "  ".join(
            header.ljust(width) for header, width in zip(headers, widths, strict=True)
        )
    ]
    lines.append("  ".join("-" * width for width in widths))
    for row in cells:
        lines.append(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            )
        )
    return "\n".join(line.rstrip() for line in lines)


def format_result(result: RunResult) -> str:
    lines = [
        f"status:  {result.status}",
        f"run_id:  {result.run_id}",
    ]
    if result.adapter or result.model:
        lines.append(f"model:   {result.adapter}/{result.model}")
    if result.runner_id:
        lines.append(f"runner:  {result.runner_id} (attempt {result.attempt})")
    if result.duration_s:
        lines.append(f"time:    {result.duration_s:.2f} s")
    usage = result.usage
    if usage.input_tokens or usage.output_tokens:
        lines.append(
            f"tokens:  {usage.input_tokens} in, {usage.output_tokens} out, "
            f"${result.cost_usd:.6f}"
        )
    for note in result.notes:
        lines.append(f"note:    {note}")
    if result.error is not None:
        lines.append(f"error:   {result.error.message}")
    if result.retry_after_s is not None:
        lines.append(
            f"retry:   after {result.retry_after_s:g} s, with backoff and jitter"
        )
    if result.output:
        lines += ["", result.output]
    return "\n".join(lines)


def format_status(status: PoolStatus) -> str:
    summary = (
        f"runners: {len(status.runners)}  slots busy: {status.slots_busy}/"
        f"{status.slots_total}  in the work queue: {status.in_stream} "
        f"({status.queued} waiting)"
    )
    if not status.runners:
        return summary + "\nno runner has a fresh heartbeat"
    moment = time.time()
    rows = [
        (
            state.runner_id,
            state.state,
            f"{state.busy}/{state.slots}",
            f"{max(0.0, moment - state.heartbeat_at):.1f} s",
            ", ".join(state.runs) or "-",
        )
        for state in status.runners
    ]
    table = format_table(("runner", "state", "busy", "heartbeat age", "runs"), rows)
    return summary + "\n\n" + table
