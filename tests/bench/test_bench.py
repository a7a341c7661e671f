"""Smoke test of the benchmark harness with tiny counts; no timing is checked."""

from __future__ import annotations

from pathlib import Path

from bench.floor import measure_floor
from bench.report import BEGIN, END, Report, Row, render, write
from bench.stats import percentile, ratio, summarize
from bus.server import EmbeddedServer


async def test_floor_row_renders(nats_server: EmbeddedServer) -> None:
    floor = await measure_floor(nats_server.url, count=5, warmup=1)
    report = Report("quick")
    report.add(Row("1", "floor: JetStream round trip", floor.jetstream.describe()))
    report.add(Row("2", "pool", "1 ms", "floor", ratio(0.002, 0.001), "<= 2x", True))
    text = render(report)
    lines = text.splitlines()
    assert floor.jetstream.count == 5
    assert floor.core.count == 5
    header = "| # | measurement | figure | compared with | ratio | target | met |"
    floor_row = "| 1 | floor: JetStream round trip | "
    assert header in lines
    assert any(line.startswith(floor_row) for line in lines)
    assert "| 2 | pool | 1 ms | floor | 2.00x | <= 2x | yes |" in lines


def test_write_replaces_marked_block(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text(f"# Title\n\nintro\n\n{BEGIN}\nold\n{END}\n\n## Analysis\n")
    write(path, "new table\n")
    text = path.read_text()
    assert "old" not in text
    assert f"{BEGIN}\nnew table\n{END}\n" in text
    assert text.startswith("# Title\n\nintro\n\n")
    assert text.endswith("## Analysis\n")


def test_percentile_interpolates() -> None:
    summary = summarize([0.004, 0.001, 0.003, 0.002])
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert percentile([1.0, 2.0], 0.5) == 1.5
    assert summary.p50 == 0.0025
    assert summary.max == 0.004
