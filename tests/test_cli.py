"""The superpool command line, run as a subprocess like a user would."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client

from bus.client import PoolClient
from bus.settings import Settings
from tests.pool import child_environ, running_pool, wait_until

SUPERPOOL = [sys.executable, "-m", "superpool.cli"]
# `superpool up` prints its addresses within this long on a 2-core machine.
STARTUP_LIMIT_S = 30.0


async def superpool(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [*SUPERPOOL, *args],
        env=child_environ(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_run_prints_result(settings: Settings, nc: object) -> None:
    async with running_pool(settings, runners=1):
        done = await superpool(
            settings, "run", "hello there", "--task", "hi", "--adapter", "echo"
        )
    assert done.returncode == 0, done.stderr
    assert "status:  OK" in done.stdout
    assert "echo (no model was called): hello there" in done.stdout


async def test_cli_run_json_and_exit_code_busy(settings: Settings, nc: object) -> None:
    async with running_pool(settings, runners=1, slots=1):
        holder = asyncio.create_task(
            superpool(
                settings,
                "run",
                "x",
                "--task",
                "hold",
                "--adapter",
                "echo",
                "--model",
                "delay=3",
            )
        )
        await asyncio.sleep(1.5)
        done = await superpool(
            settings, "run", "x", "--task", "t", "--adapter", "echo", "--json"
        )
        held = await holder
    assert held.returncode == 0, held.stderr
    assert done.returncode == 3
    assert json.loads(done.stdout)["status"] == "POOL_BUSY"


async def test_cli_run_unreachable_exit_code(settings: Settings, nc: object) -> None:
    done = await superpool(settings, "run", "x", "--task", "t", "--adapter", "echo")
    assert done.returncode == 4
    assert "POOL_UNREACHABLE" in done.stdout


async def test_cli_status_table(settings: Settings, nc: object) -> None:
    async with running_pool(settings, runners=2):
        done = await superpool(settings, "status")
        as_json = await superpool(settings, "status", "--json")
    assert done.returncode == 0, done.stderr
    assert "runners: 2  slots busy: 0/6" in done.stdout
    assert "runner-0" in done.stdout
    assert "runner-1" in done.stdout
    assert json.loads(as_json.stdout)["slots_total"] == 6


async def test_cli_result_of_finished_run(settings: Settings, nc: object) -> None:
    async with running_pool(settings, runners=1):
        ran = await superpool(
            settings, "run", "keep me", "--task", "t", "--adapter", "echo", "--json"
        )
        run_id = json.loads(ran.stdout)["run_id"]
        done = await superpool(settings, "result", run_id)
    assert done.returncode == 0, done.stderr
    assert f"run_id:  {run_id}" in done.stdout
    assert "keep me" in done.stdout


async def test_cli_reports_bad_setting(settings: Settings) -> None:
    broken = child_environ(settings) | {"SUPERPOOL_SLOTS": "many"}
    done = await asyncio.to_thread(
        subprocess.run,
        [*SUPERPOOL, "status"],
        env=broken,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip() == "ConfigError: SUPERPOOL_SLOTS='many' is not a valid int"
    )


def port_is_open(url: str) -> bool:
    host, port = re.match(r"\w+://([\d.]+):(\d+)", url).groups()  # type: ignore[union-attr]
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


@pytest.mark.timeout(120)
async def test_up_serves_mcp_tool_and_stops(tmp_path: Path) -> None:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SUPERPOOL_")
    }
    environ["SUPERPOOL_WORK_ROOT"] = str(tmp_path / "work")
    process = subprocess.Popen(  # noqa: ASYNC220 - the test reads its pipe in a thread
        [
            *SUPERPOOL,
            "up",
            "--nats-port",
            "0",
            "--proxy-port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=environ,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = await asyncio.wait_for(
            asyncio.to_thread(read_until_ready, process), STARTUP_LIMIT_S
        )
        proxy_url = re.search(r"MCP proxy\s+(\S+)", lines).group(1)  # type: ignore[union-attr]
        nats_url = re.search(r"nats-server\s+(\S+)", lines).group(1)  # type: ignore[union-attr]
        async with Client(proxy_url) as client:
            response = await client.call_tool(
                "super_agent_run",
                {"task": "hello", "prompt_text": "hi", "adapter": "echo"},
            )
        process.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(process.wait, 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    assert response.structured_content["status"] == "OK"
    assert response.structured_content["output"] == "echo (no model was called): hi"
    assert response.is_error is False
    assert '"url": "' + proxy_url + '"' in lines
    assert code == 0
    assert not port_is_open(nats_url)
    assert not port_is_open(proxy_url)


def read_until_ready(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("Stop with Ctrl-C"):
            return "".join(seen)
    raise AssertionError("superpool up printed no ready line:\n" + "".join(seen))


async def test_cli_cancel_running_run(settings: Settings, nc: object) -> None:
    async with running_pool(settings, runners=1) as runners:
        holder = asyncio.create_task(
            superpool(
                settings,
                "run",
                "x",
                "--task",
                "hold",
                "--adapter",
                "echo",
                "--model",
                "delay=30",
            )
        )
        await wait_until(lambda: list(runners[0].running), lambda runs: len(runs) == 1)
        run_id = next(iter(runners[0].running))
        done = await superpool(settings, "cancel", run_id)
        held = await holder
    assert done.returncode == 6, done.stderr
    assert "status:  CANCELLED" in done.stdout
    assert held.returncode == 6


async def test_cli_runs_filters_by_status(settings: Settings, nc: object) -> None:
    async with running_pool(settings, runners=1):
        await superpool(
            settings, "run", "good", "--task", "ok-task", "--adapter", "echo"
        )
        await superpool(
            settings,
            "run",
            "bad",
            "--task",
            "bad-task",
            "--adapter",
            "echo",
            "--model",
            "fail",
        )
        failed = await superpool(settings, "runs", "--status", "RUN_FAILED")
        every = await superpool(settings, "runs", "--json")
    assert failed.returncode == 0, failed.stderr
    assert "bad-task" in failed.stdout
    assert "ok-task" not in failed.stdout
    assert sorted(record["task"] for record in json.loads(every.stdout)) == [
        "bad-task",
        "ok-task",
    ]


async def test_cli_drain_unknown_runner(settings: Settings, nc: object) -> None:
    async with running_pool(settings, runners=1):
        done = await superpool(settings, "drain", "nobody")
    assert done.returncode == 1
    assert done.stderr.strip() == "runner nobody is not running"


async def test_cli_status_shows_runs_in_flight(settings: Settings, nc: object) -> None:
    async with running_pool(settings, runners=1):
        holder = asyncio.create_task(
            superpool(
                settings,
                "run",
                "x",
                "--task",
                "visible",
                "--adapter",
                "echo",
                "--model",
                "delay=4",
            )
        )
        async with PoolClient(settings) as client:
            await wait_until(
                client.status,
                lambda status: any(state.run_details for state in status.runners),
            )
        done = await superpool(settings, "status")
        await holder
    assert "visible" in done.stdout
    assert "runner-0" in done.stdout
    assert "slots busy: 1/3" in done.stdout
