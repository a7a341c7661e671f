"""Plain-text tables for the command line."""

from __future__ import annotations

import time
from collections.abc import Sequence

from bus.wire import RunRecord, RunResult
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


def format_status(status: PoolStatus, moment: float | None = None) -> str:
    """Format the pool summary, a table of runners and a table of runs in flight."""
    moment = time.time() if moment is None else moment
    summary = (
        f"runners: {len(status.runners)}  slots busy: {status.slots_busy}/"
        f"{status.slots_total}  in the work queue: {status.in_stream} "
        f"({status.queued} waiting)"
    )
    if not status.runners:
        return summary + "\nno runner has a fresh heartbeat"
    runner_rows = [
        (
            state.runner_id,
            state.state,
            f"{state.busy}/{state.slots}",
            _age(moment, state.heartbeat_at),
            state.version or "-",
        )
        for state in status.runners
    ]
    parts = [
        summary,
        format_table(
            ("runner", "state", "busy", "heartbeat age", "version"), runner_rows
        ),
    ]
    run_rows = [
        (
            run.run_id,
            state.runner_id,
            run.task,
            run.adapter,
            run.model or "-",
            _age(moment, run.started_at),
        )
        for state in status.runners
        for run in state.run_details
    ]
    if run_rows:
        headers = ("run", "runner", "task", "adapter", "model", "age")
        parts.append(format_table(headers, run_rows))
    return "\n\n".join(parts)


def format_runs(records: Sequence[RunRecord]) -> str:
    """Format run records, one line each, in the order given."""
    rows: list[tuple[object, ...]] = []
    for record in records:
        result = record.result
        if result is None:
            rows.append(
                (
                    record.run_id,
                    record.state,
                    record.task,
                    record.caller or "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                )
            )
            continue
        rows.append(
            (
                record.run_id,
                result.status,
                record.task or result.task,
                record.caller or result.caller or "-",
                result.model or "-",
                f"{result.duration_s:.2f} s",
                f"{result.usage.input_tokens}/{result.usage.output_tokens}",
                f"${result.cost_usd:.6f}",
                _clock(result.finished_at or record.updated_at),
            )
        )
    headers = (
        "run",
        "status",
        "task",
        "caller",
        "model",
        "duration",
        "tokens in/out",
        "cost",
        "finished",
    )
    return format_table(headers, rows) if rows else "no runs match"


def _age(moment: float, since: float) -> str:
    return f"{max(0.0, moment - since):.1f} s" if since else "-"


def _clock(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment)) if moment else "-"
