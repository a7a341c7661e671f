"""The tool loop that the claude and gemini adapters share.

Both call the model, run the tool calls it requests, send the results back
and stop at a final answer or a bound. `ToolLoop` runs that loop, with the
API key, the run's timeout, the retries and the error mapping around it.
Each model adapter subclasses it with the parts that depend on its
provider's format.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from bus.errors import AdapterError
from bus.wire import Usage
from runner.adapters.base import (
    AdapterOutput,
    AdapterRun,
    ProviderFailure,
    call_with_retries,
    redact,
    run_tool,
    turn_limit_error,
)
from runner.tools import Toolbox, ToolResult

_Client = TypeVar("_Client")
_Message = TypeVar("_Message")
_Response = TypeVar("_Response")


@dataclass(frozen=True)
class ApiKey:
    """A provider's API key and the environment variable that contains it."""

    value: str
    variable: str


@dataclass(frozen=True)
class ToolCall:
    """A tool call that the model requested, taken out of its provider's format."""

    # None when the provider sent no id, which Gemini may do.
    id: str | None
    name: str
    arguments: object


@dataclass(frozen=True)
class Answer:
    """The final answer that a model's last response contains."""

    text: str
    # The model that the provider reports, else the one the run requested.
    model: str
    notes: tuple[str, ...] = ()


class ToolLoop(ABC, Generic[_Client, _Message, _Response]):
    """One run's conversation with a model that may call the file tools.

    `converse` runs what every provider shares: the API key lookup, the
    client's lifetime, the run's timeout, the turns with their retries,
    progress messages, usage and turn limit, and the redaction of the key
    from errors. A subclass for each provider makes the client, sends the
    messages and encodes and decodes them in the provider's format. Its
    SDK is imported in `open_client`, so a runner that never runs that
    adapter does not load it.
    """

    adapter: ClassVar[str]
    # Environment variables that may contain the API key, checked in this order.
    key_variables: ClassVar[tuple[str, ...]]
    # The error message for a run started while none of `key_variables` is set.
    missing_key_message: ClassVar[str]

    def __init__(
        self, client: _Client, run: AdapterRun, key: ApiKey, deadline: float
    ) -> None:
        self.client = client
        self.run = run
        self.key = key
        # The event loop's time at which the run's timeout ends.
        self.deadline = deadline
        self.toolbox = Toolbox.for_run(run)
        self.messages: list[_Message] = [self.encode_prompt()]

    @classmethod
    async def converse(cls, run: AdapterRun) -> AdapterOutput:
        """Converse with `run.model` until it replies without a tool call.

        The whole run, retries and tool calls included, ends after the
        request's `timeout_s` or else `settings.default_timeout_s`.

        Raises:
            AdapterError: no API key is set, a provider call failed, the
                response held no usable answer, or a bound ended the run.
                Each copy of the API key in the message is replaced by
                [redacted].
            TimeoutError: the run did not finish in time.
        """
        key = cls._api_key()
        client = cls.open_client(run, key)
        timeouts: tuple[type[Exception], ...] = (TimeoutError, *cls.timeout_errors())
        deadline = asyncio.get_running_loop().time() + run.timeout_s
        async with client as opened:
            conversation = cls(opened, run, key, deadline)
            try:
                async with asyncio.timeout_at(deadline):
                    return await conversation._turns()
            except timeouts:
                raise TimeoutError(
                    f"{cls.adapter} run did not finish within {run.timeout_s:g} s"
                ) from None
            except AdapterError as exc:
                message = str(exc)
        # Chaining would keep the SDK error, whose text may contain the key.
        raise AdapterError(cls.adapter, redact(message, key.value)) from None

    @classmethod
    def _api_key(cls) -> ApiKey:
        for variable in cls.key_variables:
            value = os.environ.get(variable, "").strip()
            if value:
                return ApiKey(value, variable)
        raise AdapterError(cls.adapter, cls.missing_key_message)

    async def _turns(self) -> AdapterOutput:
        run = self.run
        for turn in range(1, run.settings.max_turns + 1):
            response = await call_with_retries(
                functools.partial(self._attempt, turn),
                classify=self._classify,
                run=run,
                adapter=self.adapter,
                deadline=self.deadline,
            )
            usage = self.usage(response)
            run.add_usage(usage.input_tokens, usage.output_tokens)
            calls = self.tool_calls(response)
            if not calls:
                return self._output(self.answer(response))
            if turn == run.settings.max_turns:
                break
            results = [
                await run_tool(run, self.toolbox, call.name, call.arguments)
                for call in calls
            ]
            self.messages.extend(self.encode_results(response, calls, results))
        raise turn_limit_error(self.adapter, run)

    async def _attempt(self, turn: int) -> _Response:
        await self.run.progress(f"calling {self.run.model} (turn {turn})")
        return await self.send(turn)

    def _classify(self, exc: Exception) -> ProviderFailure | None:
        # A timeout propagates, so that `converse` reports the run's timeout.
        if isinstance(exc, self.timeout_errors()):
            return None
        failure = self.classify(exc)
        if failure is None:
            return None
        message = redact(failure.message, self.key.value)
        return dataclasses.replace(failure, message=message)

    def _output(self, answer: Answer) -> AdapterOutput:
        spent = self.run.spent
        return AdapterOutput(
            output=answer.text,
            model=answer.model,
            usage=Usage(
                input_tokens=spent.input_tokens, output_tokens=spent.output_tokens
            ),
            notes=answer.notes,
        )

    @classmethod
    @abstractmethod
    def open_client(
        cls, run: AdapterRun, key: ApiKey
    ) -> AbstractAsyncContextManager[_Client]:
        """Import the SDK and make a client, which `converse` enters once.

        The client must not retry on its own, because `call_with_retries`
        logs each retry and keeps every wait inside the run's timeout.
        """

    @classmethod
    @abstractmethod
    def timeout_errors(cls) -> tuple[type[Exception], ...]:
        """Return the SDK's exceptions for a call that timed out."""

    @abstractmethod
    def encode_prompt(self) -> _Message:
        """Return the first message: the user turn that contains the prompt."""

    @abstractmethod
    async def send(self, turn: int) -> _Response:
        """Send `messages` to the model once, log the response and return it."""

    @abstractmethod
    def classify(self, exc: Exception) -> ProviderFailure | None:
        """Describe a failed `send`, or return None to let `exc` propagate.

        The SDK's timeout errors do not reach it, and the caller redacts the
        API key from the message.
        """

    @abstractmethod
    def usage(self, response: _Response) -> Usage:
        """Return the tokens that `response` counts, as the provider prices them."""

    @abstractmethod
    def tool_calls(self, response: _Response) -> list[ToolCall]:
        """Return the tool calls that `response` requests.

        An empty list makes `response` the last one, and `answer` decodes it.
        """

    @abstractmethod
    def answer(self, response: _Response) -> Answer:
        """Return the final answer, or raise AdapterError for an unusable one.

        A refused, blocked or empty answer is unusable.
        """

    @abstractmethod
    def encode_results(
        self, response: _Response, calls: list[ToolCall], results: list[ToolResult]
    ) -> list[_Message]:
        """Return the messages that add the model's turn and the tool results."""
