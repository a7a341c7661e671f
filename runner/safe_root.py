"""SafeRoot: file access that cannot leave one directory.

The model's file tools and the runner's `prompt_file` read open every path
through a `SafeRoot`. The walk from the root opens one component at a time with
`os.open(..., dir_fd=..., O_NOFOLLOW)`, so a symlink swapped in after a check
cannot lead the open outside. Each rejection raises `PathRuleError`, whose
message names the path and the rule it broke.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from bus.errors import PathRejectedError

# Linux gives up after 40 symlinks in one lookup (ELOOP); the walk does the same.
MAX_SYMLINKS = 40
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK keeps an open of a FIFO from waiting for a writer; the fstat
# after the open then rejects anything that is not a regular file.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class PathRuleError(PathRejectedError):
    """A path broke one named rule of the path check."""

    def __init__(
        self, path: str, rule: str, reason: str, *, field: str | None = None
    ) -> None:
        shown = f"{field} {path!r}" if field else repr(path)
        super().__init__(
            path, f"{shown} is rejected: {reason} (rule {rule})", field=field
        )
        self.rule = rule


class WalkedPath:
    """The open directories from the root down to a path's last component.

    `name` is the last component, still to be opened by the caller, or None
    when the path names the directory `dir_fd` itself (the root, or a path
    ending in `..`).
    """

    def __init__(self, root_fd: int) -> None:
        self._fds = [root_fd]
        self.names: list[str] = []
        self.name: str | None = None

    @property
    def dir_fd(self) -> int:
        return self._fds[-1]

    @property
    def depth(self) -> int:
        return len(self.names)

    def enter(self, fd: int, name: str) -> None:
        self._fds.append(fd)
        self.names.append(name)

    def leave(self) -> None:
        os.close(self._fds.pop())
        self.names.pop()

    def back_to_root(self) -> None:
        while self.names:
            self.leave()

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> WalkedPath:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SafeRoot:
    """A directory that path lookups cannot leave.

    Paths are relative to the root, or absolute and starting with the root's
    path. Every lookup opens the root again by walking its resolved path from
    `/` with O_NOFOLLOW, then walks the given path one component at a time:

    - `..` goes back one directory, and `..` at the root is rejected, also
      when the path comes back inside later (`../root/file`);
    - a symlink is read with readlink and its target walked instead: a
      relative target from the symlink's directory, an absolute one from the
      root when it starts with the root's path. Any other target is
      rejected, and so are more than MAX_SYMLINKS symlinks in one lookup;
    - every directory is opened with O_DIRECTORY | O_NOFOLLOW relative to its
      parent's descriptor, so a directory replaced by a symlink between the
      lstat and the open makes the open fail instead of following it.

    NOTE: a directory that another process renames out of the root while a
    walk holds its descriptor is not noticed; openat2() with RESOLVE_BENEATH
    would close that gap, and Python 3.11 has no binding for it.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Resolve `root`, which must be an existing directory.

        Raises:
            PathRuleError: `root` is relative, missing or not a directory.
        """
        given = os.fspath(root)
        if not os.path.isabs(given):
            raise PathRuleError(given, "relative", "a root must be an absolute path")
        try:
            resolved = os.path.realpath(given, strict=True)
        except OSError:
            raise PathRuleError(given, "not-found", "the root does not exist") from None
        if not os.path.isdir(resolved):
            raise PathRuleError(given, "not-a-directory", "the root is not a directory")
        self.path = Path(resolved)
        # An absolute path may name the root as configured or as resolved.
        self._prefixes = {split_path(resolved), split_path(given)}

    def relative_parts(self, path: str) -> list[str] | None:
        """Return absolute `path`'s components below the root, or None if elsewhere."""
        parts = split_path(path)
        for prefix in self._prefixes:
            if parts[: len(prefix)] == prefix:
                return list(parts[len(prefix) :])
        return None

    def walk(
        self,
        path: str,
        *,
        field: str = "path",
        follow_last: bool = True,
        create_dirs: bool = False,
    ) -> WalkedPath:
        """Open the directories leading to `path` and return them with its last name.

        Args:
            path: relative to the root, or absolute inside it.
            field: the argument name used in error messages.
            follow_last: follow a symlink in the last component too. Writes
                pass False, so that the last component is never followed.
            create_dirs: create missing directories on the way, as long as no
                symlink was followed before them.

        Raises:
            PathRuleError: the path breaks a rule; the message names it.
        """
        pending = self._parts(path, field)
        walked = WalkedPath(self._open_root(path, field))
        try:
            self._walk(walked, pending, path, field, follow_last, create_dirs)
        except BaseException:
            walked.close()
            raise
        return walked

    def open_file(
        self, path: str, *, field: str = "path"
    ) -> tuple[int, os.stat_result]:
        """Open regular file `path` for reading; return its descriptor and fstat.

        Raises:
            PathRuleError: the path breaks a rule, is not a regular file, or
                has more than one hard link.
        """
        with self.walk(path, field=field) as walked:
            if walked.name is None:
                raise PathRuleError(
                    path, "not-a-file", "it is a directory", field=field
                )
            try:
                fd = os.open(walked.name, FILE_FLAGS, dir_fd=walked.dir_fd)
            except OSError as exc:
                raise _open_error(path, field, exc) from None
        try:
            info = os.fstat(fd)
            check_regular(path, info, field)
        except BaseException:
            os.close(fd)
            raise
        return fd, info

    def open_dir(self, path: str, *, field: str = "path") -> int:
        """Open directory `path`; return its descriptor.

        Raises:
            PathRuleError: the path breaks a rule or is not a directory.
        """
        with self.walk(path, field=field) as walked:
            if walked.name is None:
                return os.dup(walked.dir_fd)
            try:
                return os.open(walked.name, DIR_FLAGS, dir_fd=walked.dir_fd)
            except NotADirectoryError:
                raise PathRuleError(
                    path, "not-a-directory", "it is not a directory", field=field
                ) from None
            except OSError as exc:
                raise _open_error(path, field, exc) from None

    def read_bytes(
        self, path: str, max_bytes: int, *, field: str = "path"
    ) -> tuple[bytes, int]:
        """Return up to `max_bytes` of regular file `path` and the file's size.

        Raises:
            PathRuleError: as `open_file`.
        """
        fd, info = self.open_file(path, field=field)
        with os.fdopen(fd, "rb") as file:
            return file.read(max_bytes), info.st_size

    def write_bytes(self, path: str, data: bytes, *, field: str = "path") -> None:
        """Write `data` to file `path`, creating missing directories on the way.

        The data goes to a new temporary file in the same directory, created
        with O_EXCL | O_NOFOLLOW, which then replaces `path` with os.replace.
        A rename replaces a directory entry and never follows it, so a
        symlink put at `path` after the check is replaced, not written
        through. An existing file keeps its permission bits.

        Raises:
            PathRuleError: the path breaks a rule, or its last component is a
                symlink (dangling or not), a directory, another non-regular
                file, or a file with more than one hard link.
        """
        if path.endswith(("/", "/.", "/..")) or path in (".", ".."):
            raise PathRuleError(path, "not-a-file", "it names a directory", field=field)
        with self.walk(
            path, field=field, follow_last=False, create_dirs=True
        ) as walked:
            if walked.name is None:
                raise PathRuleError(
                    path, "not-a-file", "it names a directory", field=field
                )
            mode = self._existing_mode(walked, path, field)
            self._replace(walked, walked.name, data, mode, path, field)

    def _existing_mode(self, walked: WalkedPath, path: str, field: str) -> int:
        assert walked.name is not None
        try:
            info = os.stat(walked.name, dir_fd=walked.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return 0o644
        if stat.S_ISLNK(info.st_mode):
            raise PathRuleError(
                path,
                "final-symlink",
                "its last component is a symlink, and writes never follow one",
                field=field,
            )
        check_regular(path, info, field)
        return stat.S_IMODE(info.st_mode)

    def _replace(
        self,
        walked: WalkedPath,
        name: str,
        data: bytes,
        mode: int,
        path: str,
        field: str,
    ) -> None:
        temporary = f".superpool-{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temporary, flags, mode, dir_fd=walked.dir_fd)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                # The mode given to os.open passes through the umask.
                os.fchmod(file.fileno(), mode)
            os.replace(
                temporary, name, src_dir_fd=walked.dir_fd, dst_dir_fd=walked.dir_fd
            )
        except OSError as exc:
            try:
                os.unlink(temporary, dir_fd=walked.dir_fd)
            except FileNotFoundError:
                pass
            raise PathRuleError(
                path, "unwritable", f"it cannot be written: {exc.strerror}", field=field
            ) from None

    def _parts(self, path: str, field: str) -> list[str]:
        check_text(path, field)
        if os.path.isabs(path):
            parts = self.relative_parts(path)
            if parts is None:
                raise PathRuleError(
                    path,
                    "outside-root",
                    f"it is outside the root {self.path}",
                    field=field,
                )
            return parts
        return list(split_path(path))

    def _open_root(self, path: str, field: str) -> int:
        fd = os.open("/", DIR_FLAGS)
        for part in self.path.parts[1:]:
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError:
                os.close(fd)
                raise PathRuleError(
                    path,
                    "root-changed",
                    f"the root {self.path} is missing or was replaced by a symlink",
                    field=field,
                ) from None
            os.close(fd)
            fd = child
        return fd

    def _walk(
        self,
        walked: WalkedPath,
        parts: list[str],
        path: str,
        field: str,
        follow_last: bool,
        create_dirs: bool,
    ) -> None:
        # Each pending component carries the symlink it came from, if any,
        # so that an escape names the symlink that caused it.
        pending: list[tuple[str, str]] = [(part, "") for part in parts]
        links = 0
        while pending:
            name, via = pending.pop(0)
            if name == "..":
                self._leave(walked, via, path, field)
                continue
            if not pending and not follow_last:
                walked.name = name
                return
            info = self._lstat(walked, name, path, field, create_dirs and not links)
            if stat.S_ISLNK(info.st_mode):
                links += 1
                pending[:0] = self._follow(walked, name, links, path, field)
                continue
            if not pending:
                walked.name = name
                return
            self._enter(walked, name, info, path, field)
        walked.name = None

    def _leave(self, walked: WalkedPath, via: str, path: str, field: str) -> None:
        if walked.depth:
            walked.leave()
            return
        if via:
            raise PathRuleError(
                path, "symlink-escape", f"{via} leads out of the root", field=field
            )
        raise PathRuleError(
            path, "parent-escape", "'..' leads out of the root", field=field
        )

    def _enter(
        self,
        walked: WalkedPath,
        name: str,
        info: os.stat_result,
        path: str,
        field: str,
    ) -> None:
        if not stat.S_ISDIR(info.st_mode):
            raise PathRuleError(
                path, "not-a-directory", f"{name!r} is not a directory", field=field
            )
        try:
            walked.enter(os.open(name, DIR_FLAGS, dir_fd=walked.dir_fd), name)
        except OSError as exc:
            raise _open_error(path, field, exc) from None

    def _follow(
        self, walked: WalkedPath, name: str, links: int, path: str, field: str
    ) -> list[tuple[str, str]]:
        """Return the components of symlink `name`'s target, to walk in its place."""
        if links > MAX_SYMLINKS:
            raise PathRuleError(
                path,
                "symlink-loop",
                f"more than {MAX_SYMLINKS} symlinks, or a symlink loop",
                field=field,
            )
        target = os.readlink(name, dir_fd=walked.dir_fd)
        via = f"symlink {name!r} -> {target!r}"
        if not os.path.isabs(target):
            return [(part, via) for part in split_path(target)]
        parts = self.relative_parts(target)
        if parts is None:
            raise PathRuleError(
                path, "symlink-escape", f"{via} points outside the root", field=field
            )
        walked.back_to_root()
        return [(part, via) for part in parts]

    def _lstat(
        self, walked: WalkedPath, name: str, path: str, field: str, create: bool
    ) -> os.stat_result:
        try:
            return os.stat(name, dir_fd=walked.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            if not create:
                raise PathRuleError(
                    path, "not-found", f"{name!r} does not exist", field=field
                ) from None
        try:
            os.mkdir(name, 0o755, dir_fd=walked.dir_fd)
        except FileExistsError:
            pass
        return os.stat(name, dir_fd=walked.dir_fd, follow_symlinks=False)


def check_regular(path: str, info: os.stat_result, field: str) -> None:
    """Reject a non-regular file, or a regular file with more than one hard link.

    A hard link looks like any other file in its directory, and the other
    links to its inode may sit outside the root (a link to a secret made
    before the run, say). The link count is the only sign, so a file with
    st_nlink > 1 is rejected for reads and writes alike.

    Raises:
        PathRuleError: rule "not-a-file" or "hard-link".
    """
    if not stat.S_ISREG(info.st_mode):
        raise PathRuleError(path, "not-a-file", "it is not a regular file", field=field)
    if info.st_nlink > 1:
        raise PathRuleError(
            path,
            "hard-link",
            f"it has {info.st_nlink} hard links, and another may be outside the root",
            field=field,
        )


def check_text(path: object, field: str) -> None:
    if not isinstance(path, str) or not path:
        raise PathRuleError(str(path), "empty", "it is empty; give a path", field=field)
    if "\x00" in path:
        raise PathRuleError(path, "nul-byte", "it contains a NUL byte", field=field)


def split_path(path: str) -> tuple[str, ...]:
    """Split at "/", dropping empty and "." components but keeping "..".

    `..` is kept because only the walk, which follows symlinks first, knows
    the directory it leads to.
    """
    return tuple(part for part in path.split("/") if part not in ("", "."))


def _open_error(path: str, field: str, exc: OSError) -> PathRuleError:
    if isinstance(exc, NotADirectoryError) or exc.errno == errno.ELOOP:
        return PathRuleError(
            path,
            "changed-during-open",
            "a component became a symlink between its check and its open",
            field=field,
        )
    return PathRuleError(
        path, "unreadable", f"it cannot be opened: {exc.strerror}", field=field
    )
