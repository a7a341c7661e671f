"""The echo adapter: no model call, for tests, demos and benchmarks.

Its `model_hint` can ask for a delay and a failure, so that tests and demos
can hold a slot or fail a run on purpose:

    model_hint="delay=2.5"       answer after 2.5 s
    model_hint="fail"            raise an adapter error
    model_hint="delay=1,fail"    both
"""

from __future__ import annotations

import asyncio

from bus.errors import AdapterError, InvalidRequestError
from bus.wire import Usage
from runner.adapters.base import AdapterOutput, AdapterRun

MODEL = "echo"
# An echo delay above this is a mistake, not a demo.
MAX_DELAY_S = 3600.0


class EchoAdapter:
    name = "echo"

    async def run(self, run: AdapterRun) -> AdapterOutput:
        delay, fail = parse_hint(run.request.model_hint)
        if delay:
            await run.progress(f"echo waiting {delay:g} s")
            await asyncio.sleep(delay)
        if fail:
            raise AdapterError(
                self.name, "echo adapter failed on request (model_hint 'fail')"
            )
        words = len(run.prompt.split())
        return AdapterOutput(
            output=f"echo (no model was called): {run.prompt}",
            model=MODEL,
            usage=Usage(input_tokens=words, output_tokens=words),
        )


def parse_hint(hint: str | None) -> tuple[float, bool]:
    """Return (delay in seconds, fail) from an echo model hint."""
    delay, fail = 0.0, False
    for part in (hint or "").split(","):
        part = part.strip()
        if not part or part == MODEL:
            continue
        if part == "fail":
            fail = True
        elif part.startswith("delay="):
            delay = _parse_delay(part.removeprefix("delay="))
        else:
            raise InvalidRequestError(
                f"echo model_hint part {part!r} is unknown: use 'delay=SECONDS' "
                "and/or 'fail'",
                field="model_hint",
            )
    return delay, fail


def _parse_delay(text: str) -> float:
    try:
        delay = float(text)
    except ValueError:
        delay = -1.0
    if not 0 <= delay <= MAX_DELAY_S:
        raise InvalidRequestError(
            f"echo delay {text!r} is invalid: give seconds from 0 to {MAX_DELAY_S:g}",
            field="model_hint",
        )
    return delay
