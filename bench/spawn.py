"""The cost a pool avoids: a new Python process that imports both provider SDKs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from bench.stats import Summary, summarize

IMPORTS = "import anthropic, google.genai"


def _spawn_once() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], check=True)
    return time.perf_counter() - started


async def process_per_task(count: int) -> Summary:
    """Time `count` starts of a process that imports anthropic and google-genai."""
    # The first start warms the page cache, as a busy machine would have it.
    await asyncio.to_thread(_spawn_once)
    samples = [await asyncio.to_thread(_spawn_once) for _ in range(count)]
    return summarize(samples)
