"""Runs for the adapter tests, pointed at the loopback provider servers."""

from __future__ import annotations

from pathlib import Path

from bus.settings import Settings
from bus.wire import RunRequest
from runner.adapters.base import AdapterRun

PROMPT = "Name three prime numbers."
MAX_OUTPUT_TOKENS = 321
CLAUDE_MODEL = "claude-sonnet-4-6"
GEMINI_MODEL = "gemini-2.5-flash-lite"
# Upper bound in seconds for calls that should end at once, so a hang fails.
QUICK_S = 5.0


def make_run(
    workspace: Path,
    *,
    adapter: str,
    model: str,
    base_url: str,
    timeout_s: float | None = None,
    cwd_mode: str = "isolated",
    prompt: str = PROMPT,
    **overrides: object,
) -> AdapterRun:
    """Return a run of `adapter` against `base_url`, in directory `workspace`.

    `overrides` are Settings fields. Retries wait 10 ms at first, so the
    tests of retries stay fast.
    """
    values: dict[str, object] = {
        "anthropic_base_url": base_url if adapter == "claude" else "",
        "gemini_base_url": base_url if adapter == "gemini" else "",
        "max_output_tokens": MAX_OUTPUT_TOKENS,
        "default_timeout_s": 30.0,
        "provider_retry_base_s": 0.01,
        "workspace_roots": (str(workspace),),
    }
    values.update(overrides)
    settings = Settings(**values)
    request = RunRequest(
        task="adapter-test",
        run_id="run-1",
        prompt_text=prompt,
        adapter=adapter,
        timeout_s=timeout_s,
        cwd_mode=cwd_mode,
        caller_cwd=str(workspace) if cwd_mode == "caller" else None,
    )
    return AdapterRun(request, prompt, workspace, model, settings)


def claude_run(
    workspace: Path, url: str, model: str = CLAUDE_MODEL, **kwargs: object
) -> AdapterRun:
    return make_run(workspace, adapter="claude", model=model, base_url=url, **kwargs)


def gemini_run(
    workspace: Path, url: str, model: str = GEMINI_MODEL, **kwargs: object
) -> AdapterRun:
    return make_run(workspace, adapter="gemini", model=model, base_url=url, **kwargs)
