"""super_agent_run through the MCP proxy, over stdio and over streamable HTTP.

Each proxy runs as `python -m mcp_proxy` in a child process and is driven by
the mcp SDK's `Client`, as an agent would drive it, so a figure here is the
pool's round trip plus the proxy's and the SDK's own cost.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mcp import Client, StdioServerParameters

from bench.harness import child_environ, spawn
from bench.stats import Summary, summarize, time_calls
from bus.settings import Settings
from mcp_proxy import TOOL_NAME

ARGUMENTS = {"task": "bench", "prompt_text": "ping", "adapter": "echo"}
# The proxy writes its port once uvicorn accepts connections.
PROXY_START_TIMEOUT_S = 30.0


async def _time_tool(client: Client, count: int, warmup: int) -> Summary:
    async def one() -> None:
        result = await client.call_tool(TOOL_NAME, ARGUMENTS)
        status = (result.structured_content or {}).get("status")
        if status != "OK":
            raise RuntimeError(f"super_agent_run ended {status}: {result}")

    return summarize(await time_calls(one, count, warmup))


async def over_stdio(settings: Settings, count: int, warmup: int) -> Summary:
    """Time `count` tool calls through a stdio proxy."""
    parameters = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_proxy", "--transport", "stdio", "--log-level", "WARNING"],
        env=child_environ(settings),
    )
    async with Client(parameters) as client:
        return await _time_tool(client, count, warmup)


async def over_http(settings: Settings, count: int, warmup: int) -> Summary:
    """Time `count` tool calls through a streamable HTTP proxy on a free port."""
    with tempfile.TemporaryDirectory() as scratch:
        port_file = Path(scratch) / "port"
        proxy = spawn(
            [
                sys.executable,
                "-m",
                "mcp_proxy",
                "--transport",
                "http",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--log-level",
                "WARNING",
            ],
            env=child_environ(settings),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        try:
            port = await _read_port(port_file, proxy)
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                return await _time_tool(client, count, warmup)
        finally:
            proxy.terminate()
            await asyncio.to_thread(proxy.wait, 15)


async def _read_port(port_file: Path, proxy: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + PROXY_START_TIMEOUT_S
    while True:
        text = port_file.read_text().strip() if port_file.exists() else ""
        if text:
            return int(text)
        if proxy.poll() is not None:
            raise RuntimeError(f"the MCP proxy exited with code {proxy.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the MCP proxy wrote no port within {PROXY_START_TIMEOUT_S:g} s"
            )
        await asyncio.sleep(0.05)
