"""Per-run working directories."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bus.settings import Settings
from bus.wire import RunRequest
from runner.sanitizer import check_path

logger = logging.getLogger(__name__)


@contextmanager
def workspace(settings: Settings, request: RunRequest) -> Iterator[Path]:
    """Yield the run's working directory.

    An isolated workspace is a new directory under the work root, removed
    when the run ends in any way, cancellation included. A caller workspace
    is `caller_cwd`, checked again here because the runner must not trust
    the client's check, and left in place.
    """
    if request.cwd_mode == "caller":
        assert request.caller_cwd is not None
        yield check_path(
            request.caller_cwd,
            settings.workspace_roots,
            field="caller_cwd",
            expect="dir",
        )
        return
    root = settings.work_root_path
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"run-{request.run_id[:40]}-", dir=root))
    try:
        yield path
    finally:
        _remove(path, request.run_id)


def _remove(path: Path, run_id: str) -> None:
    try:
        # Most runs leave the directory empty, and rmdir is one system call
        # where rmtree needs about six.
        os.rmdir(path)
        return
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        logger.error("workspace not removed run_id=%s path=%s", run_id, path)
