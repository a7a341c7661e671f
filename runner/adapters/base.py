"""What every adapter receives and returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bus.settings import Settings
from bus.wire import RunRequest, Usage

ProgressCallback = Callable[[str], Awaitable[None]]
REDACTED = "[redacted]"


async def _no_progress(message: str) -> None:
    return None


@dataclass
class AdapterRun:
    """One run as an adapter sees it.

    `prompt` is the prompt text, already read from `prompt_file` when the
    request named one; `workspace` is the run's working directory; `model` is
    the model the catalog resolved for the request.
    """

    request: RunRequest
    prompt: str
    workspace: Path
    model: str
    settings: Settings
    progress: ProgressCallback = _no_progress


@dataclass
class AdapterOutput:
    output: str
    model: str
    usage: Usage = field(default_factory=Usage)
    notes: tuple[str, ...] = ()


class Adapter(Protocol):
    name: str

    async def run(self, run: AdapterRun) -> AdapterOutput: ...


def redact(text: str, secret: str) -> str:
    """Replace every copy of `secret` in `text`, as provider errors may echo a key."""
    return text.replace(secret, REDACTED) if secret else text
