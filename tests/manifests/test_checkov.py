"""checkov's Kubernetes checks on manifests/: no failed check.

checkov is not in the `test` extra. checkov 3.3.30 installs 96 packages,
262 MB, in 29 s (measured once on a 2-core machine).
The test runs when a `checkov` executable is found
(SUPERPOOL_CHECKOV, then PATH, then next to this Python) and is skipped
otherwise. Without `--skip-download` checkov calls the Prisma Cloud API;
with it, an strace of the scan showed no network connection.

A check that does not apply is skipped next to its resource with the
annotation `checkov.io/skip1: CKV_K8S_<n>=<reason>`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.manifests.loading import MANIFESTS, ROOT

CHECKOV_ENV = "SUPERPOOL_CHECKOV"
# A scan of manifests/ took 3 s on a 2-core machine.
SCAN_TIMEOUT_S = 300
# checkov 3.3.30 scans 21 resources in manifests/base; fewer means files went missing.
MIN_RESOURCES = 15


def checkov_executable() -> str | None:
    """Return the checkov executable to use, or None when there is none."""
    configured = os.environ.get(CHECKOV_ENV)
    if configured:
        return configured
    found = shutil.which("checkov")
    if found:
        return found
    beside = Path(sys.executable).parent / "checkov"
    return str(beside) if beside.is_file() else None


def scan() -> dict[str, Any]:
    """Run checkov on manifests/ and return its JSON report."""
    executable = checkov_executable()
    if executable is None:
        pytest.skip(
            "checkov is not installed: `pip install checkov` (about 265 MB), or "
            f"set {CHECKOV_ENV} to a checkov executable"
        )
    command = [executable, "--directory", str(MANIFESTS), "--framework", "kubernetes"]
    command += ["--skip-download", "--output", "json"]
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SCAN_TIMEOUT_S,
        check=False,
    )
    report = json.loads(done.stdout)
    # One report per framework; a single framework may come as a bare object.
    return report[0] if isinstance(report, list) else report


def test_checkov_no_failed_check() -> None:
    report = scan()
    summary = report["summary"]
    failed = [
        (check["check_id"], check["resource"], check["file_path"])
        for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert summary["failed"] == 0
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] >= MIN_RESOURCES
    assert summary["passed"] > 0
