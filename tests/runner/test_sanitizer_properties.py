"""Property tests of SafeRoot on random trees of symlinks and `..` paths.

Each example builds a small tree under a new temporary directory:

    parent/
        rt/          the root: f, a/f, a/b/f, b/f and random symlinks
        out/o        outside
        rt-evil/e    a sibling whose name extends the root's

and then checks SafeRoot against the kernel: a path is readable exactly when
`os.stat` reaches a regular file and `os.path.realpath` lies inside `rt`.
Nothing outside names `rt` and no symlink is made outside, so a lookup that
leaves the root can never come back; "resolves inside" and "never left the
root" are then the same, and the kernel is a fair oracle.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.sanitizer import PathRuleError, SafeRoot, is_within

# Components of generated paths and relative symlink targets: directory-like
# names in the middle and file-like names at the end, so that many paths
# exist. "rt" is left out, so a path that leaves the root cannot name it
# again.
MIDDLE = ["a", "b", "l1", "l2", "l3", "l1", "l2", "..", ".", "out", "rt-evil"]
LAST = ["f", "l1", "l2", "l3", "a", "b", "..", "o", "e", "missing"]
LINK_NAMES = ["l1", "l2", "l3"]
DIRS = ["a", "a/b", "b"]
SUBDIRS = DIRS
FILES = ["f", "a/f", "a/b/f", "b/f"]
EXAMPLES = 400

relative = st.builds(
    lambda middle, last: "/".join([*middle, last]),
    st.lists(st.sampled_from(MIDDLE), max_size=4),
    st.sampled_from(LAST),
)
# Absolute targets are written with a placeholder for the root's parent.
absolute = st.one_of(
    relative.map(lambda rel: "PARENT/rt/" + rel),
    st.sampled_from(["PARENT/out", "PARENT/out/o", "PARENT/rt-evil", "/etc"]),
    st.just("PARENT/rt"),
)
# Short targets that often exist, from whichever directory holds the link.
NEAR_TARGETS = ["a", "b", "a/b", "f", "a/f", ".", "..", "../f", "../..", "l1", "l2"]
NEAR_TARGETS += ["../out/o", "../../out", "../rt-evil/e"]
near = st.sampled_from(NEAR_TARGETS)
targets = st.one_of(near, near, near, relative, absolute)
# l1, l2 and l3 always exist in the root; a few more sit in subdirectories.
links = st.builds(
    lambda root_targets, extra: (
        [
            ("", name, target)
            for name, target in zip(LINK_NAMES, root_targets, strict=True)
        ]
        + extra
    ),
    st.tuples(targets, targets, targets),
    st.lists(
        st.tuples(st.sampled_from(SUBDIRS), st.sampled_from(LINK_NAMES), targets),
        max_size=3,
        unique_by=lambda link: (link[0], link[1]),
    ),
)
through_link = st.builds(
    lambda link, rest: f"{link}/{rest}", st.sampled_from(LINK_NAMES), relative
)
queries = st.tuples(st.booleans(), st.one_of(relative, through_link))


def build(parent: Path, tree_links: list[tuple[str, str, str]]) -> Path:
    """Create the tree; each file contains its own path below `parent`."""
    root = parent / "rt"
    for directory in DIRS:
        (root / directory).mkdir(parents=True, exist_ok=True)
    for file in FILES:
        (root / file).write_text(f"rt/{file}")
    for name, file in (("out", "o"), ("rt-evil", "e")):
        (parent / name).mkdir()
        (parent / name / file).write_text(f"{name}/{file}")
    for directory, name, target in tree_links:
        os.symlink(target.replace("PARENT", str(parent)), root / directory / name)
    return root


def query_path(root: Path, query: tuple[bool, str]) -> str:
    absolute_form, rel = query
    return f"{root}/{rel}" if absolute_form else rel


def kernel_view(root: Path, rel: str) -> tuple[os.stat_result | None, Path]:
    joined = os.path.join(root, rel)
    try:
        info = os.stat(joined)
    except OSError:
        info = None
    return info, Path(os.path.realpath(joined))


def snapshot(directory: Path) -> dict[str, bytes]:
    """Return the contents of every regular file under `directory`."""
    found = {}
    for dirpath, _, filenames in os.walk(directory):
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(directory))] = path.read_bytes()
    return found


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(tree_links=links, query=queries)
def test_read_accepts_exactly_inside_files(
    tree_links: list[tuple[str, str, str]], query: tuple[bool, str]
) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        parent = Path(os.path.realpath(temporary))
        root = build(parent, tree_links)
        info, real = kernel_view(root, query[1])
        expected = (
            info is not None and stat.S_ISREG(info.st_mode) and is_within(real, root)
        )
        try:
            data, _ = SafeRoot(root).read_bytes(query_path(root, query), 1024)
        except PathRuleError:
            assert not expected
            return
        assert expected
        assert data.decode() == str(real.relative_to(parent))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(tree_links=links, query=queries)
def test_open_dir_accepts_exactly_inside_dirs(
    tree_links: list[tuple[str, str, str]], query: tuple[bool, str]
) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        parent = Path(os.path.realpath(temporary))
        root = build(parent, tree_links)
        info, real = kernel_view(root, query[1])
        expected = (
            info is not None and stat.S_ISDIR(info.st_mode) and is_within(real, root)
        )
        try:
            fd = SafeRoot(root).open_dir(query_path(root, query))
        except PathRuleError:
            assert not expected
            return
        try:
            assert expected
            assert os.path.samestat(os.fstat(fd), os.stat(real))
        finally:
            os.close(fd)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(tree_links=links, query=queries)
def test_write_never_changes_outside(
    tree_links: list[tuple[str, str, str]], query: tuple[bool, str]
) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        parent = Path(os.path.realpath(temporary))
        root = build(parent, tree_links)
        outside = {name: snapshot(parent / name) for name in ("out", "rt-evil")}
        marker = b"written-by-the-property-test"
        try:
            SafeRoot(root).write_bytes(query_path(root, query), marker)
        except PathRuleError:
            written = False
        else:
            written = True
        after = {name: snapshot(parent / name) for name in ("out", "rt-evil")}
        inside = snapshot(root)
        assert after == outside
        assert sorted(os.listdir(parent)) == ["out", "rt", "rt-evil"]
        assert (marker in inside.values()) == written
