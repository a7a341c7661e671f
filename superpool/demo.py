"""`superpool demo`: a local pool, four sample runs and a burst past its slots.

The sample runs go through the MCP tool over streamable HTTP, as an agent
would send them. Runs use `claude` and `gemini` where their API keys are set
and `echo` otherwise; the demo says which.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.settings import Settings
from superpool.local import local_pool
from superpool.tables import format_table

# Each burst run holds its slot this long, so the burst overlaps itself.
BURST_DELAY_S = 2.0
# Calls sent at once beyond the pool's free slots.
BURST_EXTRA = 3

DOCUMENT = """\
Quarterly operations review. Support tickets fell 18% after the new triage
bot went live in August, but median first-response time rose from 2.1 to 2.9
hours on weekends, because the weekend rota lost two engineers. Cloud spend
grew 6%, mostly from GPU instances left running after experiments. The team
proposes an auto-shutdown policy for idle GPU nodes and one more weekend hire.
"""

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: nginx:latest
          securityContext: {privileged: true, runAsUser: 0}
          env:
            - {name: DB_PASSWORD, value: hunter2}
"""


@dataclass
class DemoRun:
    label: str
    arguments: dict[str, Any]
    status: str = ""
    adapter: str = ""
    model: str = ""
    seconds: float = 0.0
    tokens: str = ""
    cost: str = ""


def pick_adapters(environ: os._Environ[str] | dict[str, str]) -> tuple[str, str]:
    """Return (cheap, frontier) adapters: real ones where a key is set, else echo."""
    cheap = (
        "gemini"
        if environ.get("GEMINI_API_KEY") or environ.get("GOOGLE_API_KEY")
        else "echo"
    )
    frontier = "claude" if environ.get("ANTHROPIC_API_KEY") else "echo"
    return cheap, frontier


def sample_runs(cheap: str, frontier: str, project: Path) -> list[DemoRun]:
    return [
        DemoRun(
            "summarize a document",
            {
                "task": "summarize-doc",
                "adapter": cheap,
                "prompt_text": "Summarize in two sentences:\n\n" + DOCUMENT,
            },
        ),
        DemoRun(
            "email subject lines",
            {
                "task": "copy-variants",
                "adapter": cheap,
                "prompt_text": "Write three email subject lines announcing a shared AI "
                "agent pool. Answer with a JSON array of three strings only.",
            },
        ),
        DemoRun(
            "dependency audit",
            {
                "task": "dependency-audit",
                "adapter": frontier,
                "cwd_mode": "caller",
                "caller_cwd": str(project),
                "prompt_text": "Audit the dependencies declared in pyproject.toml in "
                "your working directory: flag unpinned, outdated or risky ones.",
            },
        ),
        DemoRun(
            "manifest security check",
            {
                "task": "validate-manifest",
                "adapter": frontier,
                "prompt_text": "List the security problems in this Kubernetes "
                "manifest, most severe first:\n\n" + MANIFEST,
            },
        ),
    ]


def project_dir() -> Path:
    """Return the directory whose pyproject.toml the dependency audit reads."""
    here = Path.cwd()
    if (here / "pyproject.toml").is_file():
        return here
    return Path(__file__).resolve().parents[1]


async def call_tool(client: Any, run: DemoRun) -> DemoRun:
    started = time.monotonic()
    response = await client.call_tool("super_agent_run", run.arguments)
    run.seconds = time.monotonic() - started
    content = response.structured_content or {}
    run.status = content.get("status", "?")
    run.adapter = content.get("adapter") or run.arguments.get("adapter", "")
    run.model = content.get("model") or "-"
    usage = content.get("usage") or {}
    run.tokens = f"{usage.get('input_tokens', 0)}/{usage.get('output_tokens', 0)}"
    run.cost = f"${content.get('cost_usd') or 0:.6f}"
    return run


def print_table(title: str, runs: list[DemoRun]) -> None:
    rows = [
        (
            run.label,
            run.adapter,
            run.model,
            run.status,
            f"{run.seconds:.2f} s",
            run.tokens,
            run.cost,
        )
        for run in runs
    ]
    headers = ("run", "adapter", "model", "status", "duration", "tokens in/out", "cost")
    print(f"\n{title}\n")
    print(format_table(headers, rows), flush=True)


async def run_demo(
    settings: Settings, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    from mcp import Client

    cheap, frontier = pick_adapters(os.environ)
    print(f"cheap runs use {cheap}, reasoning runs use {frontier}", end="")
    print(
        " (set GEMINI_API_KEY and ANTHROPIC_API_KEY for real models)"
        if "echo" in (cheap, frontier)
        else ""
    )
    project = project_dir()
    if not settings.workspace_roots:
        settings = settings.replace(workspace_roots=(str(project),))
    with tempfile.TemporaryDirectory(prefix="superpool-demo-") as scratch:
        data_dir = Path(args.data_dir) if args.data_dir else Path(scratch)
        async with local_pool(settings, data_dir=data_dir, nats_port=-1) as pool:
            slots = sum(runner.slots for runner in pool.runners)
            print(
                f"pool up: {len(pool.runners)} runners, {slots} slots, "
                f"MCP at {pool.proxy_url}"
            )
            async with Client(pool.proxy_url) as client:
                samples = sample_runs(cheap, frontier, project)
                await asyncio.gather(*(call_tool(client, run) for run in samples))
                print_table("Four runs at once through super_agent_run", samples)
                burst = [
                    DemoRun(
                        f"burst {index + 1}",
                        {
                            "task": "burst",
                            "adapter": "echo",
                            "prompt_text": "hold a slot",
                            "model_hint": f"delay={BURST_DELAY_S:g}",
                        },
                    )
                    for index in range(slots + BURST_EXTRA)
                ]
                await asyncio.gather(*(call_tool(client, run) for run in burst))
                print_table(f"{len(burst)} runs at once on {slots} slots", burst)
    busy = sum(run.status == "POOL_BUSY" for run in burst)
    ok = sum(run.status == "OK" for run in burst)
    samples_ok = all(run.status == "OK" for run in samples)
    print(f"\nburst: {ok} OK, {busy} POOL_BUSY (expected {slots} and {BURST_EXTRA})")
    return 0 if samples_ok and ok == slots and busy == BURST_EXTRA else 1
