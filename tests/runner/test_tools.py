"""The file tools: specs, provider rendering, each tool, errors and the budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bus.settings import Settings
from runner import file_ops
from runner.tools import (
    TOOLS,
    Toolbox,
    ToolOutputLimitError,
    ToolResult,
    anthropic_tools,
    gemini_declarations,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "app.py").write_text("import os\nTOKEN = 1\nprint(TOKEN)\n")
    (root / "src" / "readme.md").write_text("Token docs\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("TOKEN in git\n")
    (root / "data.bin").write_bytes(b"TOKEN\x00\x01")
    return root


def toolbox(root: Path, *, writable: bool = True, **overrides: object) -> Toolbox:
    return Toolbox(root, Settings(**overrides), writable=writable)  # type: ignore[arg-type]


def test_specs_render_for_both_providers() -> None:
    claude = anthropic_tools(TOOLS)
    gemini = gemini_declarations(TOOLS)

    assert [tool["name"] for tool in claude] == [spec.name for spec in TOOLS]
    assert [tool["name"] for tool in gemini] == [spec.name for spec in TOOLS]
    assert claude[1]["input_schema"] is TOOLS[1].parameters
    assert gemini[1]["parameters_json_schema"] is TOOLS[1].parameters
    assert claude[1]["description"] == gemini[1]["description"]


def test_specs_omit_write_when_read_only(tree: Path) -> None:
    names = [spec.name for spec in toolbox(tree, writable=False).specs]
    assert names == ["list_dir", "read_file", "search_text"]


def test_list_dir_shows_kinds(tree: Path) -> None:
    os.symlink("src/readme.md", tree / "link")

    result = toolbox(tree).call("list_dir", {})

    assert result == ToolResult(
        ".: 4 entries\nd .git/\nf data.bin (7 bytes)\nl link -> src/readme.md\nd src/"
    )


def test_list_dir_caps_entries(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_ops, "MAX_LIST_ENTRIES", 2)

    result = toolbox(tree).call("list_dir", {"path": "."})

    assert result.text.splitlines() == [
        ".: 3 entries",
        "d .git/",
        "f data.bin (7 bytes)",
        "[1 more entry not shown]",
    ]


def test_read_line_range(tree: Path) -> None:
    box = toolbox(tree)

    middle = box.call("read_file", {"path": "src/pkg/app.py", "line_start": 2})
    one = box.call("read_file", {"path": "src/pkg/app.py", "line_end": 1})
    past = box.call("read_file", {"path": "src/pkg/app.py", "line_start": 9})

    assert middle.text == "TOKEN = 1\nprint(TOKEN)\n"
    assert one.text == "import os\n"
    assert past.text == "[line_start 9 is past the end of the file]"


def test_read_range_respects_max_bytes(tree: Path) -> None:
    result = toolbox(tree).call(
        "read_file", {"path": "src/pkg/app.py", "line_start": 2, "max_bytes": 4}
    )

    assert result.text == "TOKE\n[read_file stopped at max_bytes=4 in line 2]"


def test_read_rejects_reversed_range(tree: Path) -> None:
    result = toolbox(tree).call(
        "read_file", {"path": "src/pkg/app.py", "line_start": 3, "line_end": 2}
    )

    assert result.is_error
    assert "line_end 2 is before line_start 3" in result.text


def test_read_rejects_binary(tree: Path) -> None:
    result = toolbox(tree).call("read_file", {"path": "data.bin"})

    assert result.is_error
    assert "looks binary" in result.text


def test_search_skips_git_and_binary(tree: Path) -> None:
    result = toolbox(tree).call("search_text", {"pattern": "TOKEN"})

    assert result.text.splitlines() == [
        "2 matching lines for 'TOKEN' in . (2 files read, 1 skipped)",
        "src/pkg/app.py:2: TOKEN = 1",
        "src/pkg/app.py:3: print(TOKEN)",
    ]


def test_search_ignore_case_and_limit(tree: Path) -> None:
    result = toolbox(tree).call(
        "search_text",
        {"pattern": "token", "path": "src", "ignore_case": True, "max_matches": 2},
    )

    assert result.text.splitlines() == [
        "2 matching lines for 'token' in src (1 file read, 0 skipped)",
        "src/pkg/app.py:2: TOKEN = 1",
        "src/pkg/app.py:3: print(TOKEN)",
        "[search stopped at max_matches=2]",
    ]


def test_search_one_file(tree: Path) -> None:
    result = toolbox(tree).call(
        "search_text", {"pattern": "docs", "path": "src/readme.md"}
    )

    assert result.text.splitlines()[1] == "src/readme.md:1: Token docs"


def test_search_skips_hard_links(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.txt").write_text("TOKEN elsewhere\n")
    os.link(tmp_path / "elsewhere.txt", tree / "src" / "linked.txt")

    result = toolbox(tree).call("search_text", {"pattern": "elsewhere"})

    assert result.text.startswith("0 matching lines for 'elsewhere' in . ")


def test_search_scan_limit(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_ops, "MAX_SEARCH_SCAN_BYTES", 20)

    result = toolbox(tree).call("search_text", {"pattern": "TOKEN", "path": "src"})

    assert (
        result.text.splitlines()[-1] == "[search stopped at the scan limit of 20 bytes]"
    )


def test_search_rejects_empty_pattern(tree: Path) -> None:
    result = toolbox(tree).call("search_text", {"pattern": ""})

    assert result.is_error
    assert "invalid arguments for search_text" in result.text


def test_write_then_read(tree: Path) -> None:
    box = toolbox(tree)

    written = box.call("write_file", {"path": "out/notes.md", "content": "é\n"})
    read = box.call("read_file", {"path": "out/notes.md"})

    assert written.text == "wrote 3 bytes to out/notes.md"
    assert read.text == "é\n"


def test_unknown_argument_rejected(tree: Path) -> None:
    result = toolbox(tree).call("list_dir", {"path": ".", "recursive": True})

    assert result.is_error
    assert "invalid arguments for list_dir" in result.text
    assert "recursive" in result.text


def test_budget_counts_all_results(tree: Path) -> None:
    box = toolbox(tree, max_tool_output_bytes=40)

    first = box.call("read_file", {"path": "src/readme.md"})
    with pytest.raises(ToolOutputLimitError) as caught:
        box.call("read_file", {"path": "src/pkg/app.py"})

    assert first.text == "Token docs\n"
    assert box.output_bytes == 11 + 33
    assert "max_tool_output_bytes=40" in str(caught.value)
