"""Message shapes on the bus, as msgspec Structs encoded to JSON.

JSON keeps every payload readable in `nats stream view` and `nats kv get` and
lets an operator send a run with `nats pub`. Decoding errors name the field
and the rule that failed, for example
"Expected `str` matching regex ... - at `$.task`".
"""

from __future__ import annotations

import enum
import time
from typing import Annotated, Any, Literal

import msgspec

from bus.errors import InvalidRequestError
from bus.subjects import RUN_ID_PATTERN, TASK_PATTERN

# "auto" lets the runner pick the adapter and model from the task label
# (runner/routing.py).
AUTO_ADAPTER = "auto"
ADAPTERS = ("claude", "gemini", "echo", AUTO_ADAPTER)
CWD_MODES = ("isolated", "caller")

Task = Annotated[str, msgspec.Meta(pattern=TASK_PATTERN)]
RunId = Annotated[str, msgspec.Meta(pattern=RUN_ID_PATTERN)]
OptionalRunId = Annotated[str, msgspec.Meta(pattern=r"^([A-Za-z0-9_-]{1,128})?$")]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]


class Status(enum.StrEnum):
    """Outcome of a run, the same strings in every part of the pool."""

    OK = "OK"
    POOL_BUSY = "POOL_BUSY"
    POOL_UNREACHABLE = "POOL_UNREACHABLE"
    INVALID_REQUEST = "INVALID_REQUEST"
    RUN_FAILED = "RUN_FAILED"
    RUN_TIMEOUT = "RUN_TIMEOUT"
    CANCELLED = "CANCELLED"


class RunRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A request for one run, published to `pool.run.<task>`."""

    task: Task
    run_id: OptionalRunId = ""
    prompt_text: str | None = None
    prompt_file: str | None = None
    adapter: str = "claude"
    cwd_mode: str = "isolated"
    caller_cwd: str | None = None
    model_hint: str | None = None
    timeout_s: PositiveSeconds | None = None
    caller: str = ""
    submitted_at: float = 0.0

    def __post_init__(self) -> None:
        # msgspec turns a ValueError raised here into a ValidationError.
        if (self.prompt_text is None) == (self.prompt_file is None):
            raise ValueError("give exactly one of prompt_text and prompt_file")
        if self.adapter not in ADAPTERS:
            raise ValueError(
                f"adapter {self.adapter!r} is unknown: use one of {', '.join(ADAPTERS)}"
            )
        if self.cwd_mode not in CWD_MODES:
            raise ValueError(
                f"cwd_mode {self.cwd_mode!r} is unknown: use 'isolated' or 'caller'"
            )
        if self.cwd_mode == "caller" and not self.caller_cwd:
            raise ValueError("cwd_mode 'caller' needs caller_cwd, an absolute path")


class Usage(msgspec.Struct, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0


class RunError(msgspec.Struct, kw_only=True):
    code: str
    message: str


class RunResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The final answer for one run, sent to the caller and kept by the pool."""

    run_id: str
    status: Status
    output: str = ""
    error: RunError | None = None
    adapter: str = ""
    model: str = ""
    usage: Usage = msgspec.field(default_factory=Usage)
    cost_usd: float = 0.0
    runner_id: str = ""
    attempt: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    task: str = ""
    caller: str = ""
    # Things the caller should know, such as why a model hint was not used.
    notes: tuple[str, ...] = ()
    # Set with POOL_BUSY: a reasonable first wait before trying again.
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def duration_s(self) -> float:
        if self.started_at and self.finished_at:
            return max(0.0, self.finished_at - self.started_at)
        return 0.0


class RunRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The registry's record of a run under `run.<run_id>`.

    `state` moves from "running" to "final" (a runner finished it) or starts as
    "withdrawn" (its caller gave up before any runner claimed it).
    """

    run_id: str
    state: Literal["running", "final", "withdrawn"]
    task: str = ""
    adapter: str = ""
    caller: str = ""
    runner_id: str = ""
    attempt: int = 0
    stream_seq: int = 0
    claimed_at: float = 0.0
    updated_at: float = 0.0
    result: RunResult | None = None


class RunInFlight(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One running run, as its runner reports it in the heartbeat."""

    run_id: str
    task: str = ""
    adapter: str = ""
    model: str = ""
    started_at: float = 0.0


class RunnerState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A runner's heartbeat under `runner.<runner_id>`."""

    runner_id: str
    slots: int
    busy: int = 0
    runs: tuple[str, ...] = ()
    run_details: tuple[RunInFlight, ...] = ()
    state: Literal["ready", "draining", "stopped"] = "ready"
    version: str = ""
    host: str = ""
    started_at: float = 0.0
    heartbeat_at: float = 0.0

    @property
    def free(self) -> int:
        return max(0, self.slots - self.busy) if self.state == "ready" else 0


class RunEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A runner's message to a caller's inbox while a run goes on."""

    kind: Literal["started", "progress", "result"]
    run_id: str
    runner_id: str = ""
    message: str = ""
    at: float = 0.0
    result: RunResult | None = None


_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(RunRequest)
_result_decoder = msgspec.json.Decoder(RunResult)
_record_decoder = msgspec.json.Decoder(RunRecord)
_runner_decoder = msgspec.json.Decoder(RunnerState)
_event_decoder = msgspec.json.Decoder(RunEvent)


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode_request(data: bytes) -> RunRequest:
    """Decode a run request.

    Raises:
        InvalidRequestError: the payload is not JSON or breaks a field's rule.
    """
    try:
        return _request_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"invalid run request: {exc}") from None


def decode_result(data: bytes) -> RunResult:
    return _result_decoder.decode(data)


def decode_record(data: bytes) -> RunRecord:
    return _record_decoder.decode(data)


def decode_runner(data: bytes) -> RunnerState:
    return _runner_decoder.decode(data)


def decode_event(data: bytes) -> RunEvent:
    return _event_decoder.decode(data)


def now() -> float:
    """Return wall-clock time for timestamps in records; deadlines use monotonic."""
    return time.time()
