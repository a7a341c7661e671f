"""Conversion of pool results, progress forwarding and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.wire import RunError, RunEvent, RunResult, Status
from mcp_proxy import RunToolResult
from mcp_proxy.__main__ import load_factory, parse_args, write_port_file
from mcp_proxy.result import (
    NEXT_STEPS,
    summarize,
    to_call_tool_result,
    to_tool_result,
)
from mcp_proxy.server import _progress_reporter


def test_every_status_has_advice() -> None:
    assert set(NEXT_STEPS) == set(Status) - {Status.OK}


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


async def test_progress_failure_ignored() -> None:
    context = BrokenContext()
    report = _progress_reporter(context)  # type: ignore[arg-type]
    await report(RunEvent(kind="progress", run_id="r", message="working"))
    await report(RunEvent(kind="result", run_id="r"))
    assert context.calls == 1


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
