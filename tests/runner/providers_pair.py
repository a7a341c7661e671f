"""One interface over both loopback providers, so loop tests run on each adapter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.adapters.base import Adapter, AdapterRun
from runner.adapters.claude import ClaudeAdapter
from runner.adapters.gemini import GeminiAdapter
from tests.providers import (
    AnthropicServer,
    GeminiServer,
    ProviderServer,
    RecordedRequest,
    ScriptedResponse,
    anthropic_message,
    anthropic_tool_results,
    anthropic_tool_use,
    gemini_function_call,
    gemini_function_responses,
    gemini_response,
)
from tests.runner.agents import CLAUDE_MODEL, GEMINI_MODEL, make_run


@dataclass
class Provider:
    """A started loopback server and the adapter that talks to it."""

    name: str
    server: ProviderServer
    adapter: Adapter
    model: str

    def tool_turn(
        self,
        *calls: tuple[str, dict[str, Any]],
        input_tokens: int = 10,
        output_tokens: int = 5,
    ) -> ScriptedResponse:
        """Build a turn in which the model calls `calls`, (name, arguments) pairs."""
        if self.name == "claude":
            triples = [
                (f"toolu_{index}", name, arguments)
                for index, (name, arguments) in enumerate(calls, 1)
            ]
            return anthropic_tool_use(
                model=self.model,
                calls=triples,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )
        return gemini_function_call(
            model_version=self.model,
            calls=list(calls),
            prompt_tokens=input_tokens,
            candidates_tokens=output_tokens,
        )

    def text_turn(
        self, text: str, *, input_tokens: int = 10, output_tokens: int = 5
    ) -> ScriptedResponse:
        """Build a final turn that answers with `text`."""
        if self.name == "claude":
            body = anthropic_message(
                model=self.model,
                text=text,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )
        else:
            body = gemini_response(
                model_version=self.model,
                text=text,
                prompt_tokens=input_tokens,
                candidates_tokens=output_tokens,
            )
        return ScriptedResponse(body=body)

    def tool_results(self, request: RecordedRequest) -> list[tuple[str, bool]]:
        """Return (text, is_error) for each tool result that `request` carries."""
        if self.name == "claude":
            return [
                (block["content"], block["is_error"])
                for block in anthropic_tool_results(request)
            ]
        results = []
        for response in gemini_function_responses(request):
            body = response["response"]
            results.append((body.get("output", body.get("error", "")), "error" in body))
        return results

    def tool_names(self, request: RecordedRequest) -> list[str]:
        """Return the names of the tools that `request` offers the model."""
        if self.name == "claude":
            return [tool["name"] for tool in request.body["tools"]]
        [tools] = request.body["tools"]
        return [item["name"] for item in tools["functionDeclarations"]]

    def run(self, workspace: Path, **kwargs: Any) -> AdapterRun:
        return make_run(
            workspace,
            adapter=self.name,
            model=self.model,
            base_url=self.server.url,
            **kwargs,
        )


def start_provider(name: str) -> Provider:
    """Start the loopback server for adapter `name`; stop it with server.stop()."""
    if name == "claude":
        return Provider(name, AnthropicServer().start(), ClaudeAdapter(), CLAUDE_MODEL)
    return Provider(name, GeminiServer().start(), GeminiAdapter(), GEMINI_MODEL)
