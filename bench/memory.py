"""Resident memory of runner processes, and which provider SDKs they import."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from bench.harness import RunnerProcesses
from bus.settings import Settings

# Modules that only the claude and gemini adapters need, imported on first use.
PROVIDER_MODULES = ("anthropic", "google.genai")
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|(\s*)(\S+)$")


def rss_mb(pid: int) -> float:
    """Return VmRSS of process `pid` in MiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} has no VmRSS line")


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU time of process `pid`, from /proc/<pid>/stat."""
    # The command name in field 2 may contain spaces, so split after its ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class IdleRunner:
    rss_mb: float
    provider_modules: list[str]
    modules_imported: int


async def idle_runner(settings: Settings, log_dir: Path) -> IdleRunner:
    """Start one runner under `python -X importtime`, read its RSS and imports."""
    runner = RunnerProcesses(
        settings, 1, 1, log_dir, python_options=("-X", "importtime")
    )
    await runner.start()
    try:
        rss = rss_mb(runner.pids[0])
    finally:
        await runner.stop()
    modules = imported_modules(log_dir / "bench-0.log")
    found = [name for name in PROVIDER_MODULES if name in modules]
    return IdleRunner(rss, found, len(modules))


def imported_modules(log: Path) -> set[str]:
    """Return the modules named in the `-X importtime` lines of a log file."""
    names = set()
    for line in log.read_text(errors="replace").splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            names.add(match.group(2))
    return names
