"""Per-run workspaces: made on first use, removed in every outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import PathRejectedError
from bus.settings import Settings
from bus.wire import RunRequest
from runner.workspace import Workspace, workspace


def _settings(tmp_path: Path) -> Settings:
    roots = tmp_path / "roots"
    roots.mkdir(exist_ok=True)
    return Settings(work_root=str(tmp_path / "work"), workspace_roots=(str(roots),))


def _request(**fields: object) -> RunRequest:
    return RunRequest(task="ws", run_id="run-ws-1", prompt_text="x", **fields)  # type: ignore[arg-type]


def test_isolated_directory_made_only_on_first_use(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    place = Workspace(settings, _request())

    assert not (tmp_path / "work").exists()
    first = place.path()
    second = place.path()

    assert first == second
    assert first.parent == tmp_path / "work"
    assert first.name.startswith("run-run-ws-1-")
    assert first.stat().st_mode & 0o777 == 0o700


def test_unused_workspace_leaves_no_directory(tmp_path: Path) -> None:
    with workspace(_settings(tmp_path), _request()):
        pass

    assert not (tmp_path / "work").exists()


def test_directory_with_files_removed(tmp_path: Path) -> None:
    with workspace(_settings(tmp_path), _request()) as place:
        path = place.path()
        (path / "sub").mkdir()
        (path / "sub" / "draft.md").write_text("hi")

    assert list((tmp_path / "work").iterdir()) == []


def test_directory_removed_when_the_run_raises(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError),
        workspace(_settings(tmp_path), _request()) as place,
    ):
        (place.path() / "partial.txt").write_text("x")
        raise RuntimeError("adapter failed")

    assert list((tmp_path / "work").iterdir()) == []


def test_caller_directory_checked_and_kept(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    checkout = tmp_path / "roots" / "project"
    checkout.mkdir()
    (checkout / "pyproject.toml").write_text("[project]\n")

    with workspace(
        settings, _request(cwd_mode="caller", caller_cwd=str(checkout))
    ) as place:
        assert place.path() == checkout

    assert (checkout / "pyproject.toml").read_text() == "[project]\n"


def test_caller_directory_outside_roots_rejected_at_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    with pytest.raises(PathRejectedError) as caught:
        Workspace(settings, _request(cwd_mode="caller", caller_cwd=str(outside)))

    assert str(outside) in str(caught.value)
