"""The path checks that guard `caller_cwd`, `prompt_file` and every tool path.

Two layers:

- `check_path` resolves a path with `os.path.realpath` and accepts it when its
  components start with the components of one configured workspace root.
  Components, not string prefixes: `/srv/workspace-evil` is not inside
  `/srv/workspace`. The client and the runner use it on `caller_cwd` before a
  run.
- `SafeRoot` opens files for the model's tools and for `prompt_file`. It walks
  from the root directory one component at a time with
  `os.open(..., dir_fd=..., O_NOFOLLOW)`, so a symlink swapped in after a
  check cannot lead the open outside. A symlink is followed only when its
  target lies inside the same root, and `..` never climbs above the root.

With no root configured every path is rejected; neither layer falls back to
the process's working directory. Every rejection raises `PathRuleError`, a
`PathRejectedError` whose message names the path and the rule it broke.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bus.errors import InvalidRequestError
from runner.safe_root import PathRuleError, SafeRoot, check_text

__all__ = [
    "PathRuleError",
    "SafeRoot",
    "check_path",
    "check_request_paths",
    "read_prompt_file",
    "roots_containing",
]


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
        PathRuleError: the path is empty, contains a NUL byte, is relative
            with no base, does not exist, is of the wrong kind, or resolves
            outside every root.
    """
    check_text(path, field)
    if not os.path.isabs(path):
        if base is None:
            raise PathRuleError(
                path, "relative", "it is relative; give an absolute path", field=field
            )
        path_to_resolve = os.path.join(base, path)
    else:
        path_to_resolve = path
    resolved_roots = _configured_roots(path, roots, field)
    try:
        resolved = Path(os.path.realpath(path_to_resolve, strict=True))
    except OSError:
        raise PathRuleError(
            path, "not-found", "it does not exist", field=field
        ) from None
    if not any(is_within(resolved, root) for root in resolved_roots):
        root_names = [str(root) for root in resolved_roots]
        raise PathRuleError(
            path,
            "outside-root",
            f"it is outside the workspace roots {root_names}",
            field=field,
        )
    if expect == "dir" and not resolved.is_dir():
        raise PathRuleError(
            path, "not-a-directory", "it is not a directory", field=field
        )
    if expect == "file" and not resolved.is_file():
        raise PathRuleError(path, "not-a-file", "it is not a regular file", field=field)
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


def roots_containing(roots: Sequence[str], path: str, *, field: str) -> list[SafeRoot]:
    """Return the workspace roots that absolute `path` starts with, deepest first.

    The match is by the path's leading components, before any symlink or
    `..` is looked at: the walk from each root decides the rest.

    Raises:
        PathRuleError: no root is configured, or none starts `path`.
    """
    check_text(path, field)
    safe_roots = []
    for root in roots:
        try:
            safe_roots.append(SafeRoot(root))
        except PathRuleError:
            continue
    if not safe_roots:
        raise _no_root_error(path, field)
    matching = [root for root in safe_roots if root.relative_parts(path) is not None]
    if not matching:
        root_names = [str(root.path) for root in safe_roots]
        raise PathRuleError(
            path,
            "outside-root",
            f"it is outside the workspace roots {root_names}",
            field=field,
        )
    return sorted(matching, key=lambda root: len(root.path.parts), reverse=True)


def read_prompt_file(
    roots: Sequence[str], prompt_file: str, caller_cwd: str | None, max_bytes: int
) -> str:
    """Read a request's `prompt_file` through `SafeRoot`, from `caller_cwd` if relative.

    The file is opened from the deepest workspace root that the path starts
    with, and then from the enclosing roots when that walk rejects it (as for
    a symlink from a nested root to its parent root). The first rejection is
    raised when all fail.

    Raises:
        PathRuleError: the path breaks a rule of the path check.
        InvalidRequestError: the file is larger than `max_bytes` or not UTF-8.
    """
    check_text(prompt_file, "prompt_file")
    if os.path.isabs(prompt_file):
        path = prompt_file
    elif caller_cwd:
        path = os.path.join(caller_cwd, prompt_file)
    else:
        raise PathRuleError(
            prompt_file,
            "relative",
            "it is relative and the request has no caller_cwd; give an absolute path",
            field="prompt_file",
        )
    data = _read_from_roots(roots, path, max_bytes + 1)
    if len(data) > max_bytes:
        raise InvalidRequestError(
            f"prompt_file {path!r} is larger than the limit of {max_bytes} bytes",
            field="prompt_file",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError(
            f"prompt_file {path!r} is not UTF-8 text", field="prompt_file"
        ) from None


def _read_from_roots(roots: Sequence[str], path: str, max_bytes: int) -> bytes:
    first_error: PathRuleError | None = None
    for root in roots_containing(roots, path, field="prompt_file"):
        try:
            data, _ = root.read_bytes(path, max_bytes, field="prompt_file")
        except PathRuleError as exc:
            first_error = first_error or exc
            continue
        return data
    assert first_error is not None
    raise first_error


def _configured_roots(path: str, roots: Sequence[str], field: str) -> list[Path]:
    resolved = resolve_roots(roots)
    if not resolved:
        raise _no_root_error(path, field)
    return resolved


def _no_root_error(path: str, field: str) -> PathRuleError:
    return PathRuleError(
        path,
        "no-root",
        "no workspace root is configured; set SUPERPOOL_WORKSPACE_ROOTS to the "
        "directories runs may use",
        field=field,
    )
