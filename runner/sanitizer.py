"""The path check that guards `caller_cwd`, `prompt_file` and every tool path.

A path is accepted only when, after every symlink is resolved, its components
start with the components of one configured workspace root. Components, not
string prefixes: `/srv/workspace-evil` is not inside `/srv/workspace`. With no
root configured every path is rejected; the check never falls back to the
process's working directory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bus.errors import PathRejectedError


def resolve_roots(roots: Sequence[str]) -> list[Path]:
    """Resolve the configured roots; a root that does not exist is skipped."""
    resolved = []
    for root in roots:
        try:
            resolved.append(Path(os.path.realpath(root, strict=True)))
        except OSError:
            continue
    return resolved


def is_within(path: Path, root: Path) -> bool:
    """Tell whether resolved `path` is `root` or below it, comparing components."""
    return path.parts[: len(root.parts)] == root.parts


def check_path(
    path: str,
    roots: Sequence[str],
    *,
    field: str,
    base: Path | None = None,
    expect: str = "any",
) -> Path:
    """Resolve `path` and return it when it lies inside one of `roots`.

    Args:
        path: the path as the caller gave it.
        roots: the configured workspace roots.
        field: the request field or tool argument, named in errors.
        base: directory that a relative `path` is taken from; without it a
            relative path is rejected.
        expect: "dir", "file" or "any".

    Raises:
        PathRejectedError: the path is empty, holds a NUL byte, is relative
            with no base, does not exist, is of the wrong kind, or resolves
            outside every root.
    """
    if not isinstance(path, str) or not path:
        raise PathRejectedError(
            str(path), f"{field} is empty; give an absolute path", field=field
        )
    if "\x00" in path:
        raise PathRejectedError(
            path, f"{field} {path!r} contains a NUL byte", field=field
        )
    if not os.path.isabs(path):
        if base is None:
            raise PathRejectedError(
                path,
                f"{field} {path!r} is relative; give an absolute path",
                field=field,
            )
        path_to_resolve = os.path.join(base, path)
    else:
        path_to_resolve = path
    resolved_roots = resolve_roots(roots)
    if not resolved_roots:
        raise PathRejectedError(
            path,
            f"{field} {path!r} is rejected because no workspace root is configured; "
            "set SUPERPOOL_WORKSPACE_ROOTS to the directories runs may use",
            field=field,
        )
    try:
        resolved = Path(os.path.realpath(path_to_resolve, strict=True))
    except OSError:
        raise PathRejectedError(
            path, f"{field} {path!r} does not exist", field=field
        ) from None
    if not any(is_within(resolved, root) for root in resolved_roots):
        shown = [str(root) for root in resolved_roots]
        raise PathRejectedError(
            path,
            f"{field} {path!r} is outside the workspace roots {shown}",
            field=field,
        )
    if expect == "dir" and not resolved.is_dir():
        raise PathRejectedError(
            path, f"{field} {path!r} is not a directory", field=field
        )
    if expect == "file" and not resolved.is_file():
        raise PathRejectedError(
            path, f"{field} {path!r} is not a regular file", field=field
        )
    return resolved


def check_request_paths(
    roots: Sequence[str], caller_cwd: str | None, prompt_file: str | None
) -> tuple[Path | None, Path | None]:
    """Check a request's `caller_cwd` and `prompt_file`; return them resolved.

    A relative `prompt_file` is taken from `caller_cwd`.
    """
    cwd = None
    if caller_cwd is not None:
        cwd = check_path(caller_cwd, roots, field="caller_cwd", expect="dir")
    prompt = None
    if prompt_file is not None:
        prompt = check_path(
            prompt_file, roots, field="prompt_file", base=cwd, expect="file"
        )
    return cwd, prompt
