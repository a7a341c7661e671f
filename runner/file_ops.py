"""The read-only file operations behind the model's tools, each on a SafeRoot.

Each returns the text that the tool sends to the model. Paths are opened with
`SafeRoot`. The search opens each entry it finds relative to its directory's
descriptor with O_NOFOLLOW, so it cannot leave the tree either.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from runner.safe_root import DIR_FLAGS, FILE_FLAGS, SafeRoot

# Entries shown by one list_dir call; a larger directory is cut with a note.
MAX_LIST_ENTRIES = 1000
# Ceiling on max_matches for one search_text call.
MAX_SEARCH_MATCHES = 1000
# Bytes one search_text call reads over all files, so that a search of a big
# tree ends in seconds: tools run in a thread, which a timeout cannot stop.
MAX_SEARCH_SCAN_BYTES = 32 * 1024 * 1024
# Directory depth below which a search does not go.
MAX_SEARCH_DEPTH = 64
# A matching line longer than this is cut in the search output.
MAX_MATCH_LINE_CHARS = 300
# A file with a NUL byte in its first this many bytes is taken as binary.
BINARY_SNIFF_BYTES = 8192
# Bytes read per step while skipping to a line, so a huge line costs no memory.
SKIP_CHUNK_BYTES = 64 * 1024
# Directories that a search skips: version-control data, not project text.
SKIPPED_DIRS = frozenset({".git"})


def list_entries(root: SafeRoot, path: str) -> str:
    """List directory `path`: 'd name/', 'f name (N bytes)' or 'l name -> target'."""
    fd = root.open_dir(path)
    try:
        with os.scandir(fd) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        lines = [_describe(fd, entry) for entry in entries[:MAX_LIST_ENTRIES]]
    finally:
        os.close(fd)
    header = f"{path}: {plural(len(entries), 'entry', 'entries')}"
    hidden = len(entries) - MAX_LIST_ENTRIES
    if hidden > 0:
        lines.append(f"[{plural(hidden, 'more entry', 'more entries')} not shown]")
    return "\n".join([header, *lines])


def _describe(dir_fd: int, entry: os.DirEntry[str]) -> str:
    info = entry.stat(follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        return f"l {entry.name} -> {os.readlink(entry.name, dir_fd=dir_fd)}"
    if stat.S_ISDIR(info.st_mode):
        return f"d {entry.name}/"
    if stat.S_ISREG(info.st_mode):
        return f"f {entry.name} ({info.st_size} bytes)"
    return f"o {entry.name} (not a regular file)"


def read_lines(
    root: SafeRoot,
    path: str,
    max_bytes: int,
    line_start: int | None = None,
    line_end: int | None = None,
) -> str:
    """Return text file `path`, or lines `line_start` to `line_end` of it.

    Lines are numbered from 1 and the range is inclusive. At most `max_bytes`
    bytes are returned; a note at the end names the place where the text was cut.

    Raises:
        PathRuleError: the path breaks a rule of the path check.
        ValueError: the range is empty or the file is binary.
    """
    if line_start and line_end and line_end < line_start:
        raise ValueError(f"line_end {line_end} is before line_start {line_start}")
    fd, info = root.open_file(path)
    with os.fdopen(fd, "rb") as file:
        if line_start is None and line_end is None:
            data = file.read(max_bytes + 1)
            text = _decode(data[:max_bytes])
            if len(data) > max_bytes:
                text += (
                    f"\n[read_file stopped at max_bytes={max_bytes} of "
                    f"{info.st_size} bytes; pass line_start and line_end to read "
                    "the rest]"
                )
            return text
        return _read_range(file, max_bytes, line_start or 1, line_end)


def _read_range(file: BinaryIO, max_bytes: int, start: int, end: int | None) -> str:
    number = 1
    while number < start:
        piece = file.readline(SKIP_CHUNK_BYTES)
        if not piece:
            return f"[line_start {start} is past the end of the file]"
        if piece.endswith(b"\n"):
            number += 1
    out = bytearray()
    while end is None or number <= end:
        piece = file.readline(max_bytes - len(out) + 1)
        if not piece:
            break
        out += piece
        if len(out) > max_bytes:
            return _decode(bytes(out[:max_bytes])) + (
                f"\n[read_file stopped at max_bytes={max_bytes} in line {number}]"
            )
        if piece.endswith(b"\n"):
            number += 1
    if not out:
        return f"[line_start {start} is past the end of the file]"
    return _decode(bytes(out))


def _decode(data: bytes) -> str:
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        raise ValueError("the file looks binary (it contains NUL bytes)")
    return data.decode("utf-8", errors="replace")


def search_text(
    root: SafeRoot, pattern: str, path: str, max_matches: int, ignore_case: bool
) -> str:
    """Return the lines under `path` (a directory or a file) that contain `pattern`.

    `pattern` is a fixed string, because a regular expression from a model can
    backtrack for minutes in a thread that nothing can stop. Symlinks, .git
    directories, binary files and files with several hard links are skipped.

    Raises:
        PathRuleError: `path` breaks a rule of the path check.
    """
    search = _Search(pattern, ignore_case, max_matches)
    # Matches are shown with the path as the model gave it in front.
    prefix = "" if path.strip("/") in ("", ".") else path.rstrip("/") + "/"
    with root.walk(path) as walked:
        if walked.name is None:
            search.directory(walked.dir_fd, prefix, 0)
        else:
            info = os.stat(walked.name, dir_fd=walked.dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                search.subdirectory(walked.dir_fd, walked.name, prefix, 0)
            else:
                search.file(walked.dir_fd, walked.name, path)
    return search.report(pattern, path)


class _Search:
    """One search_text call: its matches and what it read and skipped."""

    def __init__(self, pattern: str, ignore_case: bool, max_matches: int) -> None:
        self.ignore_case = ignore_case
        self.needle = pattern.casefold() if ignore_case else pattern
        self.max_matches = max_matches
        self.matches: list[str] = []
        self.scanned_bytes = 0
        self.files = 0
        self.skipped = 0
        self.stopped = ""

    def directory(self, fd: int, prefix: str, depth: int) -> None:
        with os.scandir(fd) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            if self.stopped:
                return
            display_path = prefix + entry.name
            if entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in SKIPPED_DIRS and depth < MAX_SEARCH_DEPTH:
                    self.subdirectory(fd, entry.name, display_path + "/", depth + 1)
            elif entry.is_file(follow_symlinks=False):
                self.file(fd, entry.name, display_path)

    def subdirectory(self, parent_fd: int, name: str, prefix: str, depth: int) -> None:
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except OSError:
            self.skipped += 1
            return
        try:
            self.directory(fd, prefix, depth)
        finally:
            os.close(fd)

    def file(self, dir_fd: int, name: str, display_path: str) -> None:
        data = self._read(dir_fd, name)
        if data is None or b"\x00" in data[:BINARY_SNIFF_BYTES]:
            self.skipped += 1
            return
        self.files += 1
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            haystack = line.casefold() if self.ignore_case else line
            if self.needle in haystack:
                self.matches.append(
                    f"{display_path}:{number}: {line[:MAX_MATCH_LINE_CHARS]}"
                )
                if len(self.matches) >= self.max_matches:
                    self.stopped = f"max_matches={self.max_matches}"
                    return

    def _read(self, dir_fd: int, name: str) -> bytes | None:
        try:
            fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
                return None
            budget = MAX_SEARCH_SCAN_BYTES - self.scanned_bytes
            data = file.read(min(info.st_size, budget))
        self.scanned_bytes += len(data)
        if info.st_size > len(data):
            self.stopped = f"the scan limit of {MAX_SEARCH_SCAN_BYTES} bytes"
        return data

    def report(self, pattern: str, path: str) -> str:
        header = (
            f"{plural(len(self.matches), 'matching line', 'matching lines')} for "
            f"{pattern!r} in {path} ({plural(self.files, 'file', 'files')} read, "
            f"{self.skipped} skipped)"
        )
        lines = [header, *self.matches]
        if self.stopped:
            lines.append(f"[search stopped at {self.stopped}]")
        return "\n".join(lines)


def plural(count: int, one: str, many: str) -> str:
    """Return "1 entry" or "3 entries"."""
    return f"{count} {one if count == 1 else many}"
