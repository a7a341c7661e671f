"""Conversion of pool results, progress forwarding and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.wire import RunError, RunEvent, RunResult, Status
from mcp_proxy import RunToolResult
from mcp_proxy.__main__ import load_factory, parse_args, write_port_file
from mcp_proxy.progress import RunProgress
from mcp_proxy.result import (
    NEXT_STEPS,
    NO_RESULT,
    summarize,
    to_call_tool_result,
    to_tool_result,
)
from tests.pool import wait_until


def test_every_status_has_advice() -> None:
    assert set(NEXT_STEPS) == (set(Status) - {Status.OK}) | {NO_RESULT}


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.OK])
def test_missing_error_filled(status: Status) -> None:
    result = to_call_tool_result(RunResult(run_id="r", status=status))
    assert result.is_error is True
    content = RunToolResult.model_validate(result.structured_content)
    assert content.error is not None
    assert content.error.code == status
    assert content.error.message


def test_ok_has_no_error() -> None:
    result = to_call_tool_result(RunResult(run_id="r", status=Status.OK, output="x"))
    assert result.is_error is False
    assert result.structured_content["error"] is None


def test_summary_ok_without_output() -> None:
    content = RunToolResult(status=Status.OK, run_id="r7", model="")
    assert summarize(content) == "OK run_id=r7 model=-"


def test_summary_lists_notes() -> None:
    content = RunToolResult(
        status=Status.OK, run_id="r", model="m", output="answer", notes=["a", "b"]
    )
    assert summarize(content) == "OK run_id=r model=m\nnote: a\nnote: b\n\nanswer"


def test_summary_failed_run() -> None:
    result = RunResult(
        run_id="r9",
        status=Status.RUN_FAILED,
        error=RunError(code="ADAPTER_ERROR", message="provider returned 500"),
    )
    text = summarize(to_tool_result(result))
    lines = text.splitlines()
    assert lines[0] == "RUN_FAILED: provider returned 500"
    assert lines[1] == NEXT_STEPS[Status.RUN_FAILED]
    assert lines[2] == "run_id=r9"


class BrokenContext:
    """A tool context whose client went away."""

    def __init__(self) -> None:
        self.calls = 0

    async def report_progress(
        self, progress: float, total: float | None, message: str | None
    ) -> None:
        self.calls += 1
        raise ConnectionResetError("client went away")


class RecordingContext:
    """A tool context that records the progress it is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str | None]] = []

    async def report_progress(
        self, progress: float, total: float | None, message: str | None
    ) -> None:
        self.sent.append((progress, message))


async def test_progress_failure_ignored() -> None:
    context = BrokenContext()
    async with RunProgress(context, "r", interval_s=60) as progress:
        await progress.on_event(RunEvent(kind="progress", run_id="r", message="work"))
        await progress.on_event(RunEvent(kind="result", run_id="r"))
    # The first notification is "submitted ..."; the result event sends none.
    assert context.calls == 2


async def test_progress_ticker_fires() -> None:
    context = RecordingContext()
    async with RunProgress(context, "r9", interval_s=0.01) as progress:
        await wait_until(lambda: len(context.sent), lambda count: count >= 3)
        ticker = progress._ticker
    assert ticker is not None
    assert ticker.done()
    messages = [message for _, message in context.sent]
    assert messages[0] == "submitted run_id=r9; waiting for a runner"
    assert messages[1].startswith("still queued, ")
    assert messages[1].endswith(" s elapsed run_id=r9")
    values = [value for value, _ in context.sent]
    assert values == list(range(1, len(values) + 1))


async def test_progress_busy_moves_run_id() -> None:
    context = RecordingContext()
    async with RunProgress(context, "r9", interval_s=60) as progress:
        busy = RunResult(run_id="r9", status=Status.POOL_BUSY)
        await progress.on_busy(1, busy, 0.25)
        assert progress.run_id == "r9-2"
        await progress.finished(RunResult(run_id="r9-2", status=Status.OK))
    assert context.sent[1] == (2, "all slots busy (attempt 1); trying again in 0.2 s")
    assert context.sent[2] == (3, "finished status=OK run_id=r9-2")


def test_args_defaults() -> None:
    args = parse_args([])
    assert args.transport == "stdio"
    assert args.host is None
    assert args.port is None
    assert args.client_factory is None


def test_args_reject_transport() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--transport", "sse"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "use MODULE:NAME"),
        ("mcp_proxy.no_such_module:x", "was not found"),
        ("mcp_proxy.server:NoSuchName", "was not found"),
        ("mcp_proxy.server:TOOL_NAME", "is not callable"),
    ],
)
def test_factory_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_factory(spec)


def test_port_file(tmp_path: Path) -> None:
    path = tmp_path / "port"
    write_port_file(str(path), "http://127.0.0.1:43125/mcp")
    assert path.read_text() == "43125\n"
    assert list(tmp_path.iterdir()) == [path]
