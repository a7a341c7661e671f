"""Parameter types of the proxy's tools, with the descriptions agents read."""

# No `from __future__ import annotations`: the SDK reads these Annotated types
# at runtime to build each tool's input schema.
from typing import Annotated

from pydantic import Field

from bus.settings import Settings
from bus.wire import ADAPTERS

TaskArg = Annotated[
    str,
    Field(
        description=(
            "Label for the kind of work, such as 'review' or 'summarize': 1 to 64 "
            "letters, digits, '_' or '-'. The pool uses it in subjects and logs."
        )
    ),
]
PromptTextArg = Annotated[
    str | None,
    Field(
        description=(
            "The complete prompt for the agent. Give exactly one of prompt_text "
            "and prompt_file."
        )
    ),
]
AdapterArg = Annotated[
    str,
    Field(
        description=(
            f"Agent backend, one of {', '.join(ADAPTERS)}. 'echo' returns the "
            "prompt without calling a model, for tests."
        )
    ),
]
CwdModeArg = Annotated[
    str,
    Field(
        description=(
            "'isolated' runs the agent in a new empty directory. 'caller' runs it "
            "in caller_cwd, where its file tools can read your files (and write "
            "them only if the pool allows writes there)."
        )
    ),
]
ModelHintArg = Annotated[
    str | None,
    Field(
        description=(
            "Preferred model. The pool may choose another one and then says why "
            "in `notes`."
        )
    ),
]
RunIdArg = Annotated[
    str,
    Field(
        description=(
            "The run_id that super_agent_run returned or sent in its progress "
            "messages: 1 to 128 letters, digits, '_' or '-'."
        )
    ),
]


def path_argument_types(settings: Settings) -> tuple[object, object]:
    """Build the prompt_file and caller_cwd types, described with this pool's roots."""
    if settings.workspace_roots:
        roots = ", ".join(settings.workspace_roots)
        rule = f"It must resolve under one of the workspace roots: {roots}."
    else:
        rule = "This pool has no workspace roots, so any value is rejected."
    prompt_file = Annotated[
        str | None,
        Field(
            description=(
                "Path of a file that contains the prompt, instead of prompt_text: "
                f"absolute, or relative to caller_cwd. {rule}"
            )
        ),
    ]
    caller_cwd = Annotated[
        str | None,
        Field(
            description=(
                "Absolute path of the directory the agent works in, required with "
                f"cwd_mode 'caller'. {rule}"
            )
        ),
    ]
    return prompt_file, caller_cwd


def limit_argument_types(settings: Settings) -> tuple[object, object]:
    """Build the timeout_s and wait_for_slot_s types, described with the limits."""
    timeout_s = Annotated[
        float | None,
        Field(
            description=(
                "Seconds the run may take, at most "
                f"{settings.max_timeout_s:g}; by default "
                f"{settings.default_timeout_s:g}. Past it the result is RUN_TIMEOUT."
            )
        ),
    ]
    wait_for_slot_s = Annotated[
        float,
        Field(
            description=(
                "Seconds to wait for a free slot when every slot is busy, at most "
                f"{settings.proxy_max_wait_for_slot_s:g}. 0 returns POOL_BUSY at "
                "once; more makes the proxy retry with backoff and jitter until a "
                "slot frees or the time is up."
            )
        ),
    ]
    return timeout_s, wait_for_slot_s
