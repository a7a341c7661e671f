"""Agent runs through the whole pool: client, NATS, runner, adapter and tools.

The providers are the loopback servers of tests/providers.py, driven by the
real anthropic and google-genai SDKs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from bus.client import PoolClient
from bus.connection import connect
from bus.provision import provision
from bus.server import EmbeddedServer
from bus.settings import Settings
from bus.wire import RunRecord, RunResult, Status
from superpool.cli import build_parser
from superpool.costs import cmd_costs, parse_group, parse_moment, summarize
from tests.conftest import make_settings
from tests.pool import running_pool
from tests.providers import (
    FAKE_ANTHROPIC_KEY,
    FAKE_GEMINI_KEY,
    SDK_ENV,
    AnthropicServer,
    GeminiServer,
    RecordedRequest,
    ScriptedResponse,
    anthropic_error,
    anthropic_message,
    anthropic_tool_results,
    anthropic_tool_use,
    gemini_function_call,
    gemini_function_responses,
    gemini_response,
)

PYPROJECT = """[project]
name = "caller-app"
dependencies = ["requests==2.19.0", "pyyaml>=5.1"]
"""
SECRET = "do-not-send-this-secret"
AUDIT_PROMPT = "Audit the dependencies in pyproject.toml for known problems."
ANSWER = "requests 2.19.0 is old; upgrade it. pyyaml>=5.1 is fine."
SONNET = "claude-sonnet-4-6"
FLASH_LITE = "gemini-2.5-flash-lite"


@pytest.fixture(autouse=True)
def fake_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SDK_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_ANTHROPIC_KEY)
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_GEMINI_KEY)


@pytest.fixture
def anthropic() -> Iterator[AnthropicServer]:
    with AnthropicServer() as server:
        yield server


@pytest.fixture
def gemini() -> Iterator[GeminiServer]:
    with GeminiServer() as server:
        yield server


async def provisioned(settings: Settings) -> Settings:
    """Create the streams, consumer and bucket of `settings`; return them."""
    connection = await connect(settings, name="test-provision")
    try:
        await provision(
            connection.jetstream(timeout=settings.request_timeout), settings
        )
    finally:
        await connection.close()
    return settings


@pytest.fixture
async def agent_settings(
    nats_server: EmbeddedServer,
    tmp_path: Path,
    anthropic: AnthropicServer,
    gemini: GeminiServer,
) -> Settings:
    settings = make_settings(
        nats_server.url,
        tmp_path,
        anthropic_base_url=anthropic.url,
        gemini_base_url=gemini.url,
        provider_retry_base_s=0.01,
    )
    return await provisioned(settings)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The caller's checkout inside the workspace root, with a secret beside it."""
    root = tmp_path / "roots"
    checkout = root / "project"
    checkout.mkdir(parents=True)
    (checkout / "pyproject.toml").write_text(PYPROJECT)
    (root / "secret.txt").write_text(SECRET)
    (tmp_path / "outside.txt").write_text(SECRET)
    return checkout


async def run_once(settings: Settings, task: str, **kwargs: object) -> RunResult:
    async with running_pool(settings, runners=1), PoolClient(settings) as client:
        return await client.run(task, **kwargs)  # type: ignore[arg-type]


def result_text(result: RunResult) -> str:
    return json.dumps(msgspec.to_builtins(result))


async def test_claude_audit_reads_pyproject(
    agent_settings: Settings, anthropic: AnthropicServer, project: Path
) -> None:
    anthropic.enqueue(
        anthropic_tool_use(
            model=SONNET,
            calls=[("toolu_1", "read_file", {"path": "pyproject.toml"})],
            input_tokens=1200,
            output_tokens=40,
        ),
        ScriptedResponse(
            body=anthropic_message(
                model=SONNET, text=ANSWER, input_tokens=1500, output_tokens=220
            )
        ),
    )

    result = await run_once(
        agent_settings,
        "dependency-audit",
        prompt_text=AUDIT_PROMPT,
        adapter="auto",
        cwd_mode="caller",
        caller_cwd=str(project),
    )

    [tool_result] = anthropic_tool_results(anthropic.requests[1])
    assert result.status == Status.OK
    assert result.output == ANSWER
    assert result.adapter == "claude"
    assert result.model == SONNET
    assert result.usage.input_tokens == 2700
    assert result.usage.output_tokens == 260
    assert result.cost_usd == (2700 * 3.00 + 260 * 15.00) / 1_000_000
    assert tool_result["content"] == PYPROJECT
    assert tool_result["is_error"] is False
    assert "adapter auto: rule 'default'" in result.notes[0]


async def test_gemini_audit_reads_pyproject(
    agent_settings: Settings, gemini: GeminiServer, project: Path
) -> None:
    gemini.enqueue(
        gemini_function_call(
            model_version=FLASH_LITE,
            calls=[("read_file", {"path": str(project / "pyproject.toml")})],
            prompt_tokens=900,
            candidates_tokens=30,
        ),
        ScriptedResponse(
            body=gemini_response(
                model_version=FLASH_LITE,
                text=ANSWER,
                prompt_tokens=1100,
                candidates_tokens=150,
            )
        ),
    )

    result = await run_once(
        agent_settings,
        "dependency-audit",
        prompt_text=AUDIT_PROMPT,
        adapter="gemini",
        cwd_mode="caller",
        caller_cwd=str(project),
    )

    [response] = gemini_function_responses(gemini.requests[1])
    assert result.status == Status.OK
    assert result.output == ANSWER
    assert result.model == FLASH_LITE
    assert result.usage.input_tokens == 2000
    assert result.usage.output_tokens == 180
    assert result.cost_usd == (2000 * 0.10 + 180 * 0.40) / 1_000_000
    assert response["response"] == {"output": PYPROJECT}


async def test_outside_paths_never_sent(
    agent_settings: Settings, anthropic: AnthropicServer, project: Path
) -> None:
    outside = str(project.parent.parent / "outside.txt")
    anthropic.enqueue(
        anthropic_tool_use(
            model=SONNET,
            calls=[
                ("toolu_1", "read_file", {"path": "../secret.txt"}),
                ("toolu_2", "read_file", {"path": outside}),
            ],
        ),
        ScriptedResponse(body=anthropic_message(model=SONNET, text="Not allowed.")),
    )

    result = await run_once(
        agent_settings,
        "audit",
        prompt_text="Read the secrets.",
        adapter="claude",
        cwd_mode="caller",
        caller_cwd=str(project),
    )

    first, second = anthropic_tool_results(anthropic.requests[1])
    assert result.status == Status.OK
    assert first["is_error"] is True
    assert "'../secret.txt' is rejected" in first["content"]
    assert "rule parent-escape" in first["content"]
    assert second["is_error"] is True
    assert "rule outside-root" in second["content"]
    assert SECRET not in anthropic.sent_text()
    assert SECRET not in result_text(result)


async def test_caller_write_rejected(
    agent_settings: Settings, anthropic: AnthropicServer, project: Path
) -> None:
    anthropic.enqueue(
        anthropic_tool_use(
            model=SONNET,
            calls=[("toolu_1", "write_file", {"path": "x.txt", "content": "hi"})],
        ),
        ScriptedResponse(body=anthropic_message(model=SONNET, text="Could not.")),
    )

    result = await run_once(
        agent_settings,
        "fix",
        prompt_text="Write x.txt.",
        adapter="claude",
        cwd_mode="caller",
        caller_cwd=str(project),
    )

    [tool_result] = anthropic_tool_results(anthropic.requests[1])
    assert result.status == Status.OK
    assert tool_result["is_error"] is True
    assert "allow_caller_writes is off" in tool_result["content"]
    assert not (project / "x.txt").exists()


async def test_isolated_write_works(
    agent_settings: Settings, anthropic: AnthropicServer
) -> None:
    anthropic.enqueue(
        anthropic_tool_use(
            model=SONNET,
            calls=[("toolu_1", "write_file", {"path": "draft.md", "content": "hi"})],
        ),
        anthropic_tool_use(
            model=SONNET, calls=[("toolu_2", "read_file", {"path": "draft.md"})]
        ),
        ScriptedResponse(body=anthropic_message(model=SONNET, text="Drafted.")),
    )

    result = await run_once(
        agent_settings, "draft", prompt_text="Draft it.", adapter="claude"
    )

    [written] = anthropic_tool_results(anthropic.requests[1])
    [read] = anthropic_tool_results(anthropic.requests[2])
    assert result.status == Status.OK
    assert written == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": "wrote 2 bytes to draft.md",
        "is_error": False,
    }
    assert read["content"] == "hi"


async def test_written_workspace_removed_after_each_outcome(
    agent_settings: Settings, anthropic: AnthropicServer
) -> None:
    work = Path(agent_settings.work_root)
    seen: list[list[str]] = []

    def write(call_id: str) -> ScriptedResponse:
        return anthropic_tool_use(
            model=SONNET,
            calls=[(call_id, "write_file", {"path": "draft.md", "content": "hi"})],
        )

    def look(reply: ScriptedResponse) -> Callable[[RecordedRequest], ScriptedResponse]:
        # Runs in the provider's thread while the run waits for this reply.
        def respond(request: RecordedRequest) -> ScriptedResponse:
            seen.append(sorted(str(p.relative_to(work)) for p in work.rglob("*.md")))
            return reply

        return respond

    def slow(request: RecordedRequest) -> ScriptedResponse:
        time.sleep(1.5)
        return ScriptedResponse(body=anthropic_message(model=SONNET, text="late"))

    anthropic.enqueue(
        write("toolu_1"),
        look(ScriptedResponse(body=anthropic_message(model=SONNET, text="Drafted."))),
        write("toolu_2"),
        look(anthropic_error(401, "authentication_error", "invalid key")),
        write("toolu_3"),
        slow,
    )
    async with (
        running_pool(agent_settings, runners=1),
        PoolClient(agent_settings) as client,
    ):
        ok = await client.run("draft", prompt_text="Draft it.", adapter="claude")
        failed = await client.run("draft", prompt_text="Draft it.", adapter="claude")
        timed_out = await client.run(
            "draft", prompt_text="Draft it.", adapter="claude", timeout_s=0.5
        )

    assert [ok.status, failed.status, timed_out.status] == [
        Status.OK,
        Status.RUN_FAILED,
        Status.RUN_TIMEOUT,
    ]
    # Each run wrote into a directory of its own, gone once the run ended.
    assert len(seen) == 2
    assert all(len(files) == 1 and files[0].endswith("/draft.md") for files in seen)
    assert seen[0] != seen[1]
    assert list(work.iterdir()) == []


async def test_429_retried_then_ok(
    agent_settings: Settings,
    anthropic: AnthropicServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    anthropic.enqueue(
        anthropic_error(
            429, "rate_limit_error", "slow down", headers={"retry-after": "1"}
        ),
        ScriptedResponse(body=anthropic_message(model=SONNET, text="Done.")),
    )

    result = await run_once(
        agent_settings, "review", prompt_text="Review.", adapter="claude"
    )

    retries = [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING and "retrying" in record.getMessage()
    ]
    assert result.status == Status.OK
    assert result.output == "Done."
    assert len(anthropic.requests) == 2
    assert len(retries) == 1
    assert f"run_id={result.run_id}" in retries[0].getMessage()
    assert "wait_s=1.000" in retries[0].getMessage()


async def test_401_names_variable_not_key(
    agent_settings: Settings,
    anthropic: AnthropicServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    anthropic.enqueue(
        anthropic_error(
            401, "authentication_error", f"invalid x-api-key {FAKE_ANTHROPIC_KEY}"
        )
    )

    result = await run_once(
        agent_settings, "review", prompt_text="Review.", adapter="claude"
    )

    assert result.status == Status.RUN_FAILED
    assert result.error is not None
    assert "HTTP 401" in result.error.message
    assert "ANTHROPIC_API_KEY" in result.error.message
    assert FAKE_ANTHROPIC_KEY not in result_text(result)
    assert len(anthropic.requests) == 1
    assert all(
        FAKE_ANTHROPIC_KEY not in record.getMessage() for record in caplog.records
    )


async def test_unknown_hint_uses_default(
    agent_settings: Settings, anthropic: AnthropicServer
) -> None:
    result = await run_once(
        agent_settings,
        "review",
        prompt_text="Review.",
        adapter="claude",
        model_hint="gpt-5",
    )

    assert result.status == Status.OK
    assert result.model == SONNET
    assert anthropic.requests[0].body["model"] == SONNET
    assert result.notes == (
        "model_hint 'gpt-5' is not in the catalog for adapter claude; used "
        "claude-sonnet-4-6",
    )


async def test_auto_summary_picks_cheap_gemini(
    agent_settings: Settings, gemini: GeminiServer, anthropic: AnthropicServer
) -> None:
    result = await run_once(
        agent_settings, "summarize-doc", prompt_text="Summarize: ...", adapter="auto"
    )

    [request] = gemini.requests
    assert result.status == Status.OK
    assert result.adapter == "gemini"
    assert result.model == FLASH_LITE
    assert request.path.endswith(f"/models/{FLASH_LITE}:generateContent")
    assert anthropic.requests == []
    assert result.notes[0] == (
        "adapter auto: rule 'summaries' (task pattern 'summar*') chose "
        "gemini/gemini-2.5-flash-lite"
    )


async def test_turn_limit_ends_run(
    nats_server: EmbeddedServer, tmp_path: Path, anthropic: AnthropicServer
) -> None:
    settings = await provisioned(
        make_settings(
            nats_server.url, tmp_path, anthropic_base_url=anthropic.url, max_turns=2
        )
    )
    anthropic.enqueue(
        *[
            anthropic_tool_use(model=SONNET, calls=[(f"toolu_{turn}", "list_dir", {})])
            for turn in range(3)
        ]
    )

    result = await run_once(settings, "loop", prompt_text="Loop.", adapter="claude")

    assert result.status == Status.RUN_FAILED
    assert result.error is not None
    assert "still called tools after max_turns=2 turns" in result.error.message
    assert len(anthropic.requests) == 2
    assert result.usage.input_tokens == 20
    assert result.usage.output_tokens == 10
    assert result.cost_usd == (20 * 3.00 + 10 * 15.00) / 1_000_000


async def test_prompt_file_read_in_runner(
    agent_settings: Settings, anthropic: AnthropicServer, project: Path
) -> None:
    (project / "prompt.md").write_text(AUDIT_PROMPT)

    result = await run_once(
        agent_settings,
        "review",
        prompt_file="prompt.md",
        adapter="claude",
        cwd_mode="caller",
        caller_cwd=str(project),
    )

    assert result.status == Status.OK
    assert anthropic.requests[0].body["messages"][0]["content"] == AUDIT_PROMPT


async def test_costs_sums_runs(
    agent_settings: Settings,
    anthropic: AnthropicServer,
    gemini: GeminiServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    anthropic.enqueue(
        ScriptedResponse(
            body=anthropic_message(
                model=SONNET, text="a", input_tokens=1000, output_tokens=100
            )
        ),
        ScriptedResponse(
            body=anthropic_message(
                model=SONNET, text="b", input_tokens=3000, output_tokens=300
            )
        ),
    )
    gemini.enqueue(
        ScriptedResponse(
            body=gemini_response(
                model_version=FLASH_LITE,
                text="c",
                prompt_tokens=5000,
                candidates_tokens=500,
            )
        )
    )
    async with running_pool(agent_settings, runners=1):
        async with PoolClient(agent_settings, caller="alice") as alice:
            first = await alice.run("review", prompt_text="x", adapter="claude")
            second = await alice.run("review", prompt_text="y", adapter="claude")
        async with PoolClient(agent_settings, caller="bob") as bob:
            third = await bob.run("summarize-doc", prompt_text="z", adapter="auto")
    args = build_parser().parse_args(["costs", "--since", "1h", "--json"])
    capsys.readouterr()

    await cmd_costs(agent_settings, args, asyncio.Event())

    document = json.loads(capsys.readouterr().out)
    review, summary = document["groups"]
    assert [first.status, second.status, third.status] == [Status.OK] * 3
    assert review == {
        "caller": "alice",
        "task": "review",
        "model": SONNET,
        "runs": 2,
        "input_tokens": 4000,
        "output_tokens": 400,
        "cost_usd": first.cost_usd + second.cost_usd,
    }
    assert review["cost_usd"] == (4000 * 3.00 + 400 * 15.00) / 1_000_000
    assert summary["caller"] == "bob"
    assert summary["model"] == FLASH_LITE
    assert summary["cost_usd"] == (5000 * 0.10 + 500 * 0.40) / 1_000_000
    assert document["total"]["runs"] == 3
    assert document["total"]["input_tokens"] == 9000


async def test_costs_table_by_model(
    agent_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_pool(agent_settings, runners=1):
        async with PoolClient(agent_settings, caller="carol") as client:
            await client.run("review", prompt_text="x", adapter="claude")
            await client.run("hello", prompt_text="hi there", adapter="echo")
    args = build_parser().parse_args(["costs", "--by", "model"])
    capsys.readouterr()

    await cmd_costs(agent_settings, args, asyncio.Event())

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "model",
        "runs",
        "tokens",
        "in",
        "tokens",
        "out",
        "cost",
        "USD",
    ]
    assert lines[2].split() == [SONNET, "1", "10", "5", "0.000105"]
    assert lines[3].split() == ["echo", "1", "2", "2", "0.000000"]
    assert lines[4].split() == ["total", "2", "12", "7", "0.000105"]


async def test_catalog_path_prices_run(
    nats_server: EmbeddedServer, tmp_path: Path, anthropic: AnthropicServer
) -> None:
    shipped = (Path(__file__).parents[1] / "runner" / "catalog.toml").read_text()
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        shipped.replace('default = "claude-sonnet-4-6"', 'default = "claude-opus-4-6"')
    )
    settings = await provisioned(
        make_settings(
            nats_server.url,
            tmp_path,
            anthropic_base_url=anthropic.url,
            catalog_path=str(catalog),
        )
    )

    result = await run_once(settings, "review", prompt_text="x", adapter="claude")

    assert result.status == Status.OK
    assert result.model == "claude-opus-4-6"
    assert anthropic.requests[0].body["model"] == "claude-opus-4-6"
    assert result.cost_usd == (10 * 5.00 + 5 * 25.00) / 1_000_000


@pytest.mark.parametrize(
    ("text", "seconds_ago"),
    [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("2w", 1209600)],
)
def test_costs_since_durations(text: str, seconds_ago: float) -> None:
    moment = parse_moment(text)
    assert abs(time.time() - seconds_ago - moment) < 5


def test_costs_since_iso_time() -> None:
    assert parse_moment("2025-01-31T12:00:00+00:00") == 1738324800.0
    assert parse_moment("2025-01-31T12:00:00Z") == 1738324800.0


@pytest.mark.parametrize("text", ["yesterday", "24", "-3h", ""])
def test_costs_since_rejects_junk(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        parse_moment(text)
    assert "neither a duration such as 24h nor an ISO 8601 time" in str(caught.value)


def test_costs_by_parses_fields() -> None:
    assert parse_group("model") == ("model",)
    assert parse_group("task, caller,task") == ("task", "caller")
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        parse_group("adapter")
    assert "use a comma-separated list of caller, task, model" in str(caught.value)


def test_costs_range_excludes_outside() -> None:
    def record(run_id: str, finished_at: float, cost: float) -> RunRecord:
        result = RunResult(
            run_id=run_id,
            status=Status.OK,
            task="t",
            caller="c",
            model="m",
            cost_usd=cost,
            finished_at=finished_at,
        )
        return RunRecord(run_id=run_id, state="final", result=result)

    records = [
        record("early", 99.0, 1.0),
        record("first", 100.0, 0.1),
        record("second", 150.0, 0.2),
        record("late", 200.0, 4.0),
        RunRecord(run_id="running", state="running"),
    ]

    [group] = summarize(records, since=100.0, until=200.0)

    assert group.runs == 2
    assert group.cost_usd == math.fsum([0.1, 0.2])
    assert group.key == {"caller": "c", "task": "t", "model": "m"}
