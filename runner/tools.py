"""File tools for the model: list, read, search and write in the run's cwd.

Each tool is defined once as a `ToolSpec` (name, description, JSON Schema of
its arguments) and rendered to each provider's format by `anthropic_tools`
and `gemini_declarations`. `Toolbox.call` runs one call. Every path goes
through `SafeRoot` at the moment of use, rooted at the run's cwd, so a path
the model gives can name nothing outside it. A rejected path or a failing
tool becomes a `ToolResult` with `is_error` set, whose text names the path and
the rule; the model sees it and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from bus.errors import AdapterError, PathRejectedError
from bus.settings import Settings
from runner.file_ops import MAX_SEARCH_MATCHES, list_entries, read_lines, search_text
from runner.safe_root import SafeRoot

if TYPE_CHECKING:
    from runner.adapters.base import AdapterRun

logger = logging.getLogger(__name__)

PATH_HELP = (
    "Path relative to the working directory, or absolute inside it. "
    "Paths outside the working directory are rejected."
)
Positive = Annotated[int, msgspec.Meta(ge=1)]


@dataclass(frozen=True)
class ToolSpec:
    """One tool as the model sees it: name, description and argument schema."""

    name: str
    description: str
    # JSON Schema of the arguments object.
    parameters: dict[str, Any]
    writes: bool = False


LIST_DIR = ToolSpec(
    name="list_dir",
    description=(
        "List the entries of a directory: one line per entry, 'd' for a "
        "directory, 'f' for a file with its size in bytes, 'l' for a symlink "
        "with its target."
    ),
    parameters={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": PATH_HELP + " Default '.'."}
        },
    },
)
READ_FILE = ToolSpec(
    name="read_file",
    description=(
        "Read a UTF-8 text file. Returns the text, cut at max_bytes (and at the "
        "pool's limit); pass line_start and line_end (1-based, inclusive) to "
        "read one part of a long file."
    ),
    parameters={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": PATH_HELP},
            "line_start": {"type": "integer", "minimum": 1},
            "line_end": {"type": "integer", "minimum": 1},
            "max_bytes": {"type": "integer", "minimum": 1},
        },
        "required": ["path"],
    },
)
SEARCH_TEXT = ToolSpec(
    name="search_text",
    description=(
        "Search the text files under a directory, or one file, for a fixed "
        "string (not a regular expression). Returns 'path:line: text' per "
        "matching line. Symlinks and .git directories are skipped."
    ),
    parameters={
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "description": "The text to find."},
            "path": {"type": "string", "description": PATH_HELP + " Default '.'."},
            "max_matches": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_SEARCH_MATCHES,
            },
            "ignore_case": {"type": "boolean"},
        },
        "required": ["pattern"],
    },
)
WRITE_FILE = ToolSpec(
    name="write_file",
    description=(
        "Write a UTF-8 text file, replacing it if it exists and creating "
        "missing directories."
    ),
    parameters={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": PATH_HELP},
            "content": {"type": "string"},
        },
        "required": ["path", "content"],
    },
    writes=True,
)
TOOLS = (LIST_DIR, READ_FILE, SEARCH_TEXT, WRITE_FILE)


def anthropic_tools(specs: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """Render `specs` as Messages API tool definitions."""
    return [
        {
            "name": spec.name,
            "description": spec.description,
            "input_schema": spec.parameters,
        }
        for spec in specs
    ]


def gemini_declarations(specs: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """Render `specs` as Gemini function declarations (JSON Schema parameters)."""
    return [
        {
            "name": spec.name,
            "description": spec.description,
            "parameters_json_schema": spec.parameters,
        }
        for spec in specs
    ]


@dataclass(frozen=True)
class ToolResult:
    """The output of one tool call, as the model receives it."""

    text: str
    is_error: bool = False


class ToolOutputLimitError(AdapterError):
    """The run's tool results passed `max_tool_output_bytes`."""


class _ListArgs(msgspec.Struct, forbid_unknown_fields=True):
    path: str = "."


class _ReadArgs(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    line_start: Positive | None = None
    line_end: Positive | None = None
    max_bytes: Positive | None = None


class _SearchArgs(msgspec.Struct, forbid_unknown_fields=True):
    pattern: Annotated[str, msgspec.Meta(min_length=1)]
    path: str = "."
    max_matches: Annotated[int, msgspec.Meta(ge=1, le=MAX_SEARCH_MATCHES)] = 100
    ignore_case: bool = False


class _WriteArgs(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    content: str


class Toolbox:
    """The tools of one run, rooted at its cwd, with the run's output budget."""

    def __init__(self, root: Path, settings: Settings, *, writable: bool) -> None:
        """Root the tools at `root`; `writable` offers write_file."""
        self.root = SafeRoot(root)
        self.settings = settings
        self.writable = writable
        # Bytes of tool results returned so far in this run.
        self.output_bytes = 0
        self._handlers: dict[str, Callable[[Any], str]] = {
            LIST_DIR.name: self._list_dir,
            READ_FILE.name: self._read_file,
            SEARCH_TEXT.name: self._search_text,
            WRITE_FILE.name: self._write_file,
        }

    @classmethod
    def for_run(cls, run: AdapterRun) -> Toolbox:
        """Build the tools for `run`: writable in an isolated workspace, and in
        the caller's directory only with `allow_caller_writes`."""
        writable = run.request.cwd_mode != "caller" or run.settings.allow_caller_writes
        return cls(run.workspace, run.settings, writable=writable)

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        """Return the tools offered to the model; write_file only when writable."""
        return tuple(spec for spec in TOOLS if self.writable or not spec.writes)

    def call(self, name: str, arguments: object) -> ToolResult:
        """Run tool `name` with the model's `arguments` and return its result.

        Raises:
            ToolOutputLimitError: this result would take the run's tool output
                past `max_tool_output_bytes`.
        """
        result = self._dispatch(name, arguments)
        self.output_bytes += len(result.text.encode())
        limit = self.settings.max_tool_output_bytes
        if self.output_bytes > limit:
            raise ToolOutputLimitError(
                "tools",
                f"the tool results of this run passed max_tool_output_bytes={limit} "
                f"at a {name} call; ask for smaller reads or raise "
                "SUPERPOOL_MAX_TOOL_OUTPUT_BYTES",
            )
        return result

    def _dispatch(self, name: str, arguments: object) -> ToolResult:
        handler = self._handlers.get(name)
        if name == WRITE_FILE.name and not self.writable:
            return _error(
                f"{name} is rejected: the run works in the caller's directory, where "
                "the tools only read (the pool setting allow_caller_writes is off)"
            )
        if handler is None:
            known = ", ".join(spec.name for spec in self.specs)
            return _error(f"tool {name!r} is unknown; use one of {known}")
        try:
            return ToolResult(handler(arguments))
        except msgspec.ValidationError as exc:
            return _error(f"invalid arguments for {name}: {exc}")
        except PathRejectedError as exc:
            return _error(f"{name}: {exc}")
        except (OSError, ValueError) as exc:
            logger.warning("tool failed tool=%s error=%r", name, exc)
            return _error(f"{name} failed: {exc}")

    def _list_dir(self, arguments: object) -> str:
        args = _convert(arguments, _ListArgs)
        return list_entries(self.root, args.path)

    def _read_file(self, arguments: object) -> str:
        args = _convert(arguments, _ReadArgs)
        limit = min(
            args.max_bytes or self.settings.max_read_bytes, self.settings.max_read_bytes
        )
        return read_lines(self.root, args.path, limit, args.line_start, args.line_end)

    def _search_text(self, arguments: object) -> str:
        args = _convert(arguments, _SearchArgs)
        return search_text(
            self.root, args.pattern, args.path, args.max_matches, args.ignore_case
        )

    def _write_file(self, arguments: object) -> str:
        args = _convert(arguments, _WriteArgs)
        data = args.content.encode()
        self.root.write_bytes(args.path, data)
        return f"wrote {len(data)} bytes to {args.path}"


def _convert(arguments: object, type_: type[Any]) -> Any:
    # strict=False accepts 3.0 for an integer, as JSON from a model may hold.
    return msgspec.convert(arguments or {}, type_, strict=False)


def _error(text: str) -> ToolResult:
    return ToolResult(f"error: {text}", is_error=True)
