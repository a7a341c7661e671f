"""The Markdown report: the machine, then one table row per figure."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
PACKAGES = (
    "nats-py",
    "msgspec",
    "mcp",
    "celery",
    "redis",
    "arq",
    "taskiq",
    "taskiq-nats",
)


@dataclass(frozen=True)
class Row:
    """One figure, what it is compared with, and the target it is held to."""

    section: str
    measurement: str
    figure: str
    against: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None


@dataclass
class Report:
    mode: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def note(self, text: str) -> None:
        self.notes.append(text)


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor()


def _memory_gib() -> str:
    try:
        line = Path("/proc/meminfo").read_text().splitlines()[0]
    except OSError:
        return "unknown"
    return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"


def _load() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _redis_version() -> str:
    try:
        output = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    match = re.search(r"v=(\S+)", output)
    return match.group(1) if match else output.strip()


def describe_machine(nats_server: str) -> dict[str, str]:
    """Return the facts about this machine and its software that the figures need."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": f"{os.cpu_count()} x {_cpu_model()}",
        "memory": _memory_gib(),
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "nats-server": nats_server,
        "redis-server": _redis_version(),
        "packages": ", ".join(versions),
        "load average at start (1, 5, 15 min)": _load(),
    }


def render(report: Report) -> str:
    """Return the report as Markdown: machine facts, the table, then notes."""
    report.machine["load average at end (1, 5, 15 min)"] = _load()
    lines = [
        f"Mode: {report.mode}. Command: `python -m bench"
        f"{' --quick' if report.mode == 'quick' else ''}`.",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in report.machine.items()]
    lines += [
        "",
        "| # | measurement | figure | compared with | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        cells = (
            row.section,
            row.measurement,
            row.figure,
            row.against,
            row.ratio,
            row.target,
            met,
        )
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    if report.notes:
        lines.append("")
        lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    """Put `text` between the begin and end markers of `path`, keeping the rest.

    A file without the markers gets them appended, with `text` between.
    """
    block = f"{BEGIN}\n{text}{END}\n"
    if not path.exists():
        path.write_text(f"# Benchmarks\n\n{block}")
        return
    current = path.read_text()
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        path.write_text(head + block + ("\n" + tail if tail else ""))
    else:
        path.write_text(current.rstrip("\n") + "\n\n" + block)
