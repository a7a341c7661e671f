"""The path check and SafeRoot: one test per attack, then reads, writes and prompts."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from bus.errors import InvalidRequestError
from runner import safe_root
from runner.sanitizer import (
    PathRuleError,
    SafeRoot,
    check_path,
    read_prompt_file,
    roots_containing,
)

SECRET = "secret-of-the-sibling"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """`x/workspace` with sub/file.txt, beside `x/workspace-evil/secret.txt`."""
    base = Path(os.path.realpath(tmp_path)) / "x"
    workspace = base / "workspace"
    (workspace / "sub").mkdir(parents=True)
    (workspace / "sub" / "file.txt").write_text("inside")
    (base / "workspace-evil").mkdir()
    (base / "workspace-evil" / "secret.txt").write_text(SECRET)
    return workspace


def rejected(root: Path, path: str) -> PathRuleError:
    with pytest.raises(PathRuleError) as caught:
        SafeRoot(root).read_bytes(path, 1024)
    assert repr(path) in str(caught.value)
    return caught.value


# Attacks: each names what it tries and the rule that stops it.


def test_attack_dotdot_to_etc_hostname(root: Path) -> None:
    error = rejected(root, "../../../../../../../../etc/hostname")
    assert error.rule == "parent-escape"


def test_attack_dotdot_after_normalization(root: Path) -> None:
    error = rejected(root, "sub/./../../workspace-evil/secret.txt")
    assert error.rule == "parent-escape"


def test_attack_dotdot_out_and_back(root: Path) -> None:
    # It would end inside, but the walk never climbs above the root.
    error = rejected(root, "../workspace/sub/file.txt")
    assert error.rule == "parent-escape"


def test_attack_absolute_etc_hostname(root: Path) -> None:
    error = rejected(root, "/etc/hostname")
    assert error.rule == "outside-root"


def test_attack_absolute_root_then_dotdot(root: Path) -> None:
    error = rejected(root, f"{root}/../workspace-evil/secret.txt")
    assert error.rule == "parent-escape"


def test_attack_symlink_to_etc(root: Path) -> None:
    os.symlink("/etc", root / "etc")
    error = rejected(root, "etc/hostname")
    assert error.rule == "symlink-escape"
    assert "'/etc'" in str(error)


def test_attack_symlink_chain(root: Path) -> None:
    os.symlink("b", root / "a")
    os.symlink("sub/c", root / "b")
    os.symlink("../../workspace-evil", root / "sub" / "c")
    error = rejected(root, "a/secret.txt")
    assert error.rule == "symlink-escape"


def test_attack_symlink_chain_absolute(root: Path) -> None:
    os.symlink(str(root / "hop"), root / "start")
    os.symlink("/etc", root / "hop")
    error = rejected(root, "start/hostname")
    assert error.rule == "symlink-escape"


def test_attack_symlink_in_parent_dir(root: Path) -> None:
    os.symlink("../..", root / "sub" / "up")
    error = rejected(root, "sub/up/workspace-evil/secret.txt")
    assert error.rule == "symlink-escape"


def test_attack_sibling_prefix_absolute(root: Path) -> None:
    error = rejected(root, f"{root}-evil/secret.txt")
    assert error.rule == "outside-root"


def test_attack_sibling_prefix_symlink(root: Path) -> None:
    os.symlink(f"{root}-evil", root / "evil")
    error = rejected(root, "evil/secret.txt")
    assert error.rule == "symlink-escape"


def test_attack_sibling_prefix_check_path(root: Path) -> None:
    with pytest.raises(PathRuleError) as caught:
        check_path(f"{root}-evil", [str(root)], field="caller_cwd", expect="dir")
    assert caught.value.rule == "outside-root"


def test_attack_nul_byte(root: Path) -> None:
    error = rejected(root, "sub/file.txt\x00.png")
    assert error.rule == "nul-byte"


def test_attack_hard_link(root: Path) -> None:
    os.link(f"{root}-evil/secret.txt", root / "innocent.txt")
    error = rejected(root, "innocent.txt")
    assert error.rule == "hard-link"
    assert "2 hard links" in str(error)


def test_attack_hard_link_write(root: Path) -> None:
    os.link(f"{root}-evil/secret.txt", root / "innocent.txt")
    with pytest.raises(PathRuleError) as caught:
        SafeRoot(root).write_bytes("innocent.txt", b"overwritten")
    assert caught.value.rule == "hard-link"
    assert Path(f"{root}-evil/secret.txt").read_text() == SECRET


def test_attack_toctou_swap_after_check(root: Path) -> None:
    checked = check_path(str(root / "sub" / "file.txt"), [str(root)], field="path")
    assert checked == root / "sub" / "file.txt"
    os.rename(root / "sub", root / "sub-moved")
    os.symlink(f"{root}-evil", root / "sub")
    (Path(f"{root}-evil") / "file.txt").write_text(SECRET)

    error = rejected(root, "sub/file.txt")

    assert error.rule == "symlink-escape"


def test_attack_toctou_swap_during_walk(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk lstats 'sub' as a directory; then 'sub' becomes a symlink."""
    real_open = os.open
    failures: list[OSError] = []

    def swapping_open(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if path == "sub" and not failures:
            os.rename(root / "sub", root / "sub-moved")
            os.symlink(f"{root}-evil", root / "sub")
            try:
                return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]
            except OSError as exc:
                failures.append(exc)
                raise
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(safe_root.os, "open", swapping_open)
    error = rejected(root, "sub/secret.txt")

    [failure] = failures
    assert failure.errno == errno.ENOTDIR
    assert error.rule == "changed-during-open"


def test_attack_symlink_loop(root: Path) -> None:
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    error = rejected(root, "loop-a/file.txt")
    assert error.rule == "symlink-loop"


def test_attack_fifo_does_not_block(root: Path) -> None:
    os.mkfifo(root / "pipe")
    error = rejected(root, "pipe")
    assert error.rule == "not-a-file"


def test_attack_root_swapped_for_symlink(root: Path) -> None:
    guarded = SafeRoot(root)
    os.rename(root, f"{root}-moved")
    os.symlink(f"{root}-evil", root)
    with pytest.raises(PathRuleError) as caught:
        guarded.read_bytes("secret.txt", 1024)
    assert caught.value.rule == "root-changed"


def test_attack_dangling_symlink_write(root: Path) -> None:
    os.symlink("missing.txt", root / "dangling")
    with pytest.raises(PathRuleError) as caught:
        SafeRoot(root).write_bytes("dangling", b"x")
    assert caught.value.rule == "final-symlink"
    assert not (root / "missing.txt").exists()


def test_attack_symlink_write_outside(root: Path) -> None:
    os.symlink(f"{root}-evil/secret.txt", root / "out.txt")
    with pytest.raises(PathRuleError) as caught:
        SafeRoot(root).write_bytes("out.txt", b"overwritten")
    assert caught.value.rule == "final-symlink"
    assert Path(f"{root}-evil/secret.txt").read_text() == SECRET


def test_attack_write_through_dangling_dir_link(root: Path) -> None:
    os.symlink("not-yet", root / "later")
    with pytest.raises(PathRuleError) as caught:
        SafeRoot(root).write_bytes("later/file.txt", b"x")
    assert caught.value.rule == "not-found"
    assert not (root / "not-yet").exists()


# Paths that must work.


@pytest.mark.parametrize(
    "path",
    [
        "sub/file.txt",
        "./sub//file.txt",
        "sub/../sub/file.txt",
        "ABS/sub/file.txt",
        "inner/file.txt",
        "chain",
        "absolute-inner",
    ],
)
def test_read_inside_paths(root: Path, path: str) -> None:
    os.symlink("sub", root / "inner")
    os.symlink("inner/file.txt", root / "chain")
    os.symlink(str(root / "sub" / "file.txt"), root / "absolute-inner")
    path = path.replace("ABS", str(root))

    data, size = SafeRoot(root).read_bytes(path, 1024)

    assert data == b"inside"
    assert size == 6


def test_read_through_configured_alias(tmp_path: Path, root: Path) -> None:
    alias = tmp_path / "alias"
    os.symlink(root, alias)

    data, _ = SafeRoot(alias).read_bytes(f"{alias}/sub/file.txt", 1024)

    assert data == b"inside"


@pytest.mark.parametrize(
    ("path", "rule"),
    [("", "empty"), ("missing.txt", "not-found"), ("sub", "not-a-file")],
)
def test_read_rejects_plain_cases(root: Path, path: str, rule: str) -> None:
    with pytest.raises(PathRuleError) as caught:
        SafeRoot(root).read_bytes(path, 1024)
    assert caught.value.rule == rule


def test_read_file_under_file_rejected(root: Path) -> None:
    error = rejected(root, "sub/file.txt/more")
    assert error.rule == "not-a-directory"


def test_open_dir_root_and_parent(root: Path) -> None:
    guarded = SafeRoot(root)
    for path in (".", str(root), "sub/.."):
        fd = guarded.open_dir(path)
        try:
            assert sorted(os.listdir(fd)) == ["sub"]
        finally:
            os.close(fd)


def test_safe_root_requires_directory(tmp_path: Path) -> None:
    with pytest.raises(PathRuleError) as missing:
        SafeRoot(tmp_path / "nope")
    with pytest.raises(PathRuleError) as relative:
        SafeRoot("relative/dir")
    assert missing.value.rule == "not-found"
    assert relative.value.rule == "relative"


# Writes


def test_write_creates_dirs_and_file(root: Path) -> None:
    SafeRoot(root).write_bytes("new/deeper/out.txt", b"hello")
    assert (root / "new" / "deeper" / "out.txt").read_bytes() == b"hello"


def test_write_replaces_and_keeps_mode(root: Path) -> None:
    target = root / "sub" / "file.txt"
    target.chmod(0o640)

    SafeRoot(root).write_bytes("sub/file.txt", b"replaced")

    assert target.read_bytes() == b"replaced"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(os.listdir(root / "sub")) == ["file.txt"]


@pytest.mark.parametrize("path", ["sub", "sub/", ".", "sub/.."])
def test_write_rejects_directories(root: Path, path: str) -> None:
    with pytest.raises(PathRuleError) as caught:
        SafeRoot(root).write_bytes(path, b"x")
    assert caught.value.rule == "not-a-file"


def test_write_rejects_escape(root: Path) -> None:
    with pytest.raises(PathRuleError) as caught:
        SafeRoot(root).write_bytes("../workspace-evil/new.txt", b"x")
    assert caught.value.rule == "parent-escape"
    assert sorted(os.listdir(f"{root}-evil")) == ["secret.txt"]


# No root configured


NO_ROOT_CALLS: list[Callable[[], object]] = [
    lambda: check_path("/etc", [], field="caller_cwd"),
    lambda: roots_containing([], "/etc/hostname", field="prompt_file"),
    lambda: read_prompt_file([], "/etc/hostname", None, 1024),
    lambda: roots_containing(["/does/not/exist"], "/etc/hostname", field="x"),
]


@pytest.mark.parametrize("call", NO_ROOT_CALLS)
def test_no_root_rejects_everything(call: Callable[[], object]) -> None:
    with pytest.raises(PathRuleError) as caught:
        call()
    assert caught.value.rule == "no-root"
    assert "SUPERPOOL_WORKSPACE_ROOTS" in str(caught.value)


# prompt_file


def test_prompt_file_relative_to_caller_cwd(root: Path) -> None:
    text = read_prompt_file([str(root)], "file.txt", str(root / "sub"), 1024)
    assert text == "inside"


def test_prompt_file_symlink_outside_rejected(root: Path) -> None:
    os.symlink(f"{root}-evil/secret.txt", root / "prompt.md")
    with pytest.raises(PathRuleError) as caught:
        read_prompt_file([str(root)], "prompt.md", str(root), 1024)
    assert caught.value.rule == "symlink-escape"
    assert caught.value.field == "prompt_file"


def test_prompt_file_other_root_symlink_rejected(root: Path) -> None:
    sibling = Path(f"{root}-evil")
    os.symlink(sibling / "secret.txt", root / "shared.md")

    with pytest.raises(PathRuleError) as caught:
        read_prompt_file([str(root), str(sibling)], "shared.md", str(root), 1024)

    assert caught.value.rule == "symlink-escape"


def test_prompt_file_nested_root_falls_back(root: Path) -> None:
    # From the inner root the symlink leads out; the outer root contains it.
    os.symlink("../workspace-evil/secret.txt", root / "shared.md")
    roots = [str(root), str(root.parent)]

    text = read_prompt_file(roots, "shared.md", str(root), 1024)

    assert text == SECRET


def test_prompt_file_too_large(root: Path) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        read_prompt_file([str(root)], "sub/file.txt", str(root), 5)
    assert "larger than the limit of 5 bytes" in str(caught.value)
    assert caught.value.field == "prompt_file"


def test_prompt_file_missing_names_path(root: Path) -> None:
    with pytest.raises(PathRuleError) as caught:
        read_prompt_file([str(root)], "nope.md", str(root), 1024)
    assert caught.value.rule == "not-found"
    assert str(root / "nope.md") in str(caught.value)


def test_prompt_file_not_utf8(root: Path) -> None:
    (root / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(InvalidRequestError) as caught:
        read_prompt_file([str(root)], "latin1.txt", str(root), 1024)
    assert "is not UTF-8 text" in str(caught.value)


def test_prompt_file_relative_without_cwd(root: Path) -> None:
    with pytest.raises(PathRuleError) as caught:
        read_prompt_file([str(root)], "sub/file.txt", None, 1024)
    assert caught.value.rule == "relative"
