"""The tool-use loop of both model adapters, against the loopback servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bus.errors import AdapterError
from runner.adapters.claude import ClaudeAdapter
from runner.adapters.gemini import GeminiAdapter
from tests.providers import (
    AnthropicServer,
    GeminiServer,
    ScriptedResponse,
    anthropic_message,
    gemini_response,
)
from tests.runner.agents import CLAUDE_MODEL, GEMINI_MODEL, claude_run, gemini_run
from tests.runner.providers_pair import Provider

SECRET = "outside-secret-7f3a"
NOTES = "alpha\nbeta\ngamma\n"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A run directory with notes.txt, next to outside.txt that holds SECRET."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.txt").write_text(NOTES)
    (tmp_path / "outside.txt").write_text(SECRET)
    return root


async def test_loop_reads_file_then_answers(
    provider: Provider, workspace: Path
) -> None:
    provider.server.enqueue(
        provider.tool_turn(
            ("read_file", {"path": "notes.txt"}), input_tokens=100, output_tokens=20
        ),
        provider.text_turn("Three lines.", input_tokens=130, output_tokens=7),
    )

    output = await provider.adapter.run(provider.run(workspace))

    first, second = provider.server.requests
    assert output.output == "Three lines."
    assert output.usage.input_tokens == 230
    assert output.usage.output_tokens == 27
    assert provider.tool_results(second) == [(NOTES, False)]
    assert "write_file" in provider.tool_names(first)


async def test_loop_sums_spent_tokens(provider: Provider, workspace: Path) -> None:
    provider.server.enqueue(
        provider.tool_turn(("list_dir", {}), input_tokens=3, output_tokens=2),
        provider.tool_turn(("list_dir", {}), input_tokens=5, output_tokens=4),
        provider.text_turn("done", input_tokens=7, output_tokens=6),
    )
    run = provider.run(workspace)

    output = await provider.adapter.run(run)

    assert run.spent.input_tokens == 15
    assert run.spent.output_tokens == 12
    assert output.usage.input_tokens == 15
    assert output.usage.output_tokens == 12
    assert len(provider.server.requests) == 3


async def test_loop_runs_calls_in_order(provider: Provider, workspace: Path) -> None:
    provider.server.enqueue(
        provider.tool_turn(
            ("read_file", {"path": "notes.txt", "line_start": 2, "line_end": 2}),
            ("list_dir", {"path": "."}),
        ),
        provider.text_turn("ok"),
    )

    await provider.adapter.run(provider.run(workspace))

    results = provider.tool_results(provider.server.requests[1])
    assert results[0] == ("beta\n", False)
    assert results[1] == (".: 1 entry\nf notes.txt (17 bytes)", False)
    assert len(results) == 2


@pytest.mark.parametrize("path", ["../outside.txt", "ABSOLUTE", "link/outside.txt"])
async def test_loop_outside_path_gets_tool_error(
    provider: Provider, workspace: Path, path: str
) -> None:
    os.symlink("..", workspace / "link")
    if path == "ABSOLUTE":
        path = str(workspace.parent / "outside.txt")
    provider.server.enqueue(
        provider.tool_turn(("read_file", {"path": path})),
        provider.text_turn("I could not read it."),
    )

    output = await provider.adapter.run(provider.run(workspace))

    [(text, is_error)] = provider.tool_results(provider.server.requests[1])
    assert output.output == "I could not read it."
    assert is_error
    assert repr(path) in text
    assert "(rule " in text
    assert SECRET not in provider.server.sent_text()


async def test_loop_search_stays_inside(provider: Provider, workspace: Path) -> None:
    os.symlink(str(workspace.parent), workspace / "up")
    provider.server.enqueue(
        provider.tool_turn(("search_text", {"pattern": "secret"})),
        provider.text_turn("none found"),
    )

    await provider.adapter.run(provider.run(workspace))

    [(text, is_error)] = provider.tool_results(provider.server.requests[1])
    assert not is_error
    assert text.startswith("0 matching lines for 'secret' in .")
    assert SECRET not in provider.server.sent_text()


async def test_loop_caller_write_rejected(provider: Provider, workspace: Path) -> None:
    provider.server.enqueue(
        provider.tool_turn(("write_file", {"path": "new.txt", "content": "x"})),
        provider.text_turn("could not write"),
    )

    await provider.adapter.run(provider.run(workspace, cwd_mode="caller"))

    first, second = provider.server.requests
    [(text, is_error)] = provider.tool_results(second)
    assert is_error
    assert "write_file is rejected" in text
    assert "allow_caller_writes is off" in text
    assert "write_file" not in provider.tool_names(first)
    assert not (workspace / "new.txt").exists()


async def test_loop_caller_write_allowed(provider: Provider, workspace: Path) -> None:
    provider.server.enqueue(
        provider.tool_turn(("write_file", {"path": "out/new.txt", "content": "hi"})),
        provider.text_turn("written"),
    )
    run = provider.run(workspace, cwd_mode="caller", allow_caller_writes=True)

    await provider.adapter.run(run)

    [(text, is_error)] = provider.tool_results(provider.server.requests[1])
    assert not is_error
    assert text == "wrote 2 bytes to out/new.txt"
    assert (workspace / "out" / "new.txt").read_text() == "hi"


async def test_loop_isolated_write_works(provider: Provider, workspace: Path) -> None:
    provider.server.enqueue(
        provider.tool_turn(("write_file", {"path": "notes.txt", "content": "new"})),
        provider.text_turn("replaced"),
    )

    await provider.adapter.run(provider.run(workspace))

    [(text, is_error)] = provider.tool_results(provider.server.requests[1])
    assert not is_error
    assert text == "wrote 3 bytes to notes.txt"
    assert (workspace / "notes.txt").read_text() == "new"


async def test_loop_write_outside_rejected(provider: Provider, workspace: Path) -> None:
    provider.server.enqueue(
        provider.tool_turn(("write_file", {"path": "../outside.txt", "content": "x"})),
        provider.text_turn("no"),
    )

    await provider.adapter.run(provider.run(workspace))

    [(text, is_error)] = provider.tool_results(provider.server.requests[1])
    assert is_error
    assert "rule parent-escape" in text
    assert (workspace.parent / "outside.txt").read_text() == SECRET


async def test_loop_turn_limit_ends_run(provider: Provider, workspace: Path) -> None:
    provider.server.enqueue(
        *[provider.tool_turn(("list_dir", {})) for _ in range(5)],
    )
    run = provider.run(workspace, max_turns=3)

    with pytest.raises(AdapterError) as caught:
        await provider.adapter.run(run)

    message = str(caught.value)
    assert "still called tools after max_turns=3 turns" in message
    assert "SUPERPOOL_MAX_TURNS" in message
    assert len(provider.server.requests) == 3
    assert run.spent.input_tokens == 30
    assert run.spent.output_tokens == 15


async def test_loop_tool_output_limit_ends_run(
    provider: Provider, workspace: Path
) -> None:
    provider.server.enqueue(provider.tool_turn(("read_file", {"path": "notes.txt"})))
    run = provider.run(workspace, max_tool_output_bytes=10)

    with pytest.raises(AdapterError) as caught:
        await provider.adapter.run(run)

    assert "passed max_tool_output_bytes=10 at a read_file call" in str(caught.value)
    assert len(provider.server.requests) == 1
    assert run.spent.input_tokens == 10


async def test_loop_read_capped_by_setting(provider: Provider, workspace: Path) -> None:
    provider.server.enqueue(
        provider.tool_turn(("read_file", {"path": "notes.txt", "max_bytes": 100})),
        provider.text_turn("ok"),
    )

    await provider.adapter.run(provider.run(workspace, max_read_bytes=4))

    [(text, is_error)] = provider.tool_results(provider.server.requests[1])
    assert not is_error
    assert text.startswith("alph\n[read_file stopped at max_bytes=4 of 17 bytes")


async def test_loop_unknown_tool_gets_error(
    provider: Provider, workspace: Path
) -> None:
    provider.server.enqueue(
        provider.tool_turn(("run_shell", {"command": "id"})),
        provider.text_turn("ok"),
    )

    await provider.adapter.run(provider.run(workspace))

    [(text, is_error)] = provider.tool_results(provider.server.requests[1])
    assert is_error
    assert text.startswith("error: tool 'run_shell' is unknown; use one of list_dir")


async def test_loop_bad_arguments_get_error(
    provider: Provider, workspace: Path
) -> None:
    provider.server.enqueue(
        provider.tool_turn(("read_file", {"path": "notes.txt", "line_start": "x"})),
        provider.text_turn("ok"),
    )

    await provider.adapter.run(provider.run(workspace))

    [(text, is_error)] = provider.tool_results(provider.server.requests[1])
    assert is_error
    assert "invalid arguments for read_file" in text
    assert "$.line_start" in text


async def test_loop_empty_answer_is_error(provider: Provider, workspace: Path) -> None:
    provider.server.enqueue(provider.text_turn(""))

    with pytest.raises(AdapterError) as caught:
        await provider.adapter.run(provider.run(workspace))

    assert f"{provider.name} returned an empty answer" in str(caught.value)


async def test_claude_refusal_is_error(
    tmp_path: Path, anthropic_server: AnthropicServer, anthropic_key: str
) -> None:
    body = anthropic_message(model=CLAUDE_MODEL, text="", stop_reason="refusal")
    anthropic_server.enqueue(ScriptedResponse(body=body))

    with pytest.raises(AdapterError) as caught:
        await ClaudeAdapter().run(claude_run(tmp_path, anthropic_server.url))

    assert "claude declined to answer (stop_reason 'refusal')" in str(caught.value)


async def test_gemini_safety_stop_is_error(
    tmp_path: Path, gemini_server: GeminiServer, gemini_key: str
) -> None:
    body = gemini_response(model_version=GEMINI_MODEL, text="", finish_reason="SAFETY")
    gemini_server.enqueue(ScriptedResponse(body=body))

    with pytest.raises(AdapterError) as caught:
        await GeminiAdapter().run(gemini_run(tmp_path, gemini_server.url))

    assert "gemini blocked the answer (finish_reason SAFETY)" in str(caught.value)
