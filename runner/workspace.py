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


class Workspace:
    """A run's working directory.

    An isolated workspace is a new directory under the work root, made on
    the run's first request for it. So a run that never touches its
    directory, such as an echo run, costs no file system call. A caller
    workspace is `caller_cwd`, checked again at once because the runner must
    not trust the client's check.
    """

    def __init__(self, settings: Settings, request: RunRequest) -> None:
        self._settings = settings
        self._request = request
        self._created: Path | None = None
        self._caller: Path | None = None
        if request.cwd_mode == "caller":
            assert request.caller_cwd is not None
            self._caller = check_path(
                request.caller_cwd,
                settings.workspace_roots,
                field="caller_cwd",
                expect="dir",
            )

    def path(self) -> Path:
        """Return the directory, making an isolated one on the first call."""
        if self._caller is not None:
            return self._caller
        if self._created is None:
            root = self._settings.work_root_path
            root.mkdir(parents=True, exist_ok=True)
            prefix = f"run-{self._request.run_id[:40]}-"
            self._created = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        return self._created

    def remove(self) -> None:
        """Remove an isolated directory made for the run; leave a caller's alone."""
        path, self._created = self._created, None
        if path is None:
            return
        try:
            # Most runs leave the directory empty, and rmdir is one system
            # call where rmtree needs about six.
            os.rmdir(path)
            return
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            logger.error(
                "workspace not removed run_id=%s path=%s", self._request.run_id, path
            )


@contextmanager
def workspace(settings: Settings, request: RunRequest) -> Iterator[Workspace]:
    """Yield the run's workspace and remove it when the run ends in any way,
    cancellation included."""
    place = Workspace(settings, request)
    try:
        yield place
    finally:
        place.remove()
