"""Runner processes SIGKILLed under load lose no run and hold no run twice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bus.settings import Settings
from tests.chaos import chaos

# CI runs a short load; SUPERPOOL_CHAOS_RUNS=200 gives the long run.
CHAOS_RUNS = int(os.environ.get("SUPERPOOL_CHAOS_RUNS", "60"))


@pytest.mark.timeout(300)
async def test_chaos_loses_no_run(
    settings: Settings, nc: object, tmp_path: Path
) -> None:
    fast = settings.replace(ack_wait_s=2.0)
    report = await chaos(fast, tmp_path, runs=CHAOS_RUNS, kill_every_s=2.0)
    assert report.kills >= 1, report.summary()
    assert report.ok == CHAOS_RUNS, report.summary()
    assert report.lost == []
    assert report.conflicting_results == []
    assert report.overlaps == []
    assert report.starts_logged >= CHAOS_RUNS
    assert report.leaked_messages == 0
    assert report.leaked_slots == 0
