"""Loopback HTTP servers that speak the Anthropic and Gemini wire formats.

Each server listens on 127.0.0.1 on a free port, in a background thread. It
records every request and responds from a script: a queue of responses, each a
`ScriptedResponse` or a function of the request. When the script is empty it
responds with a success built from the request. A multi-turn conversation, such
as a tool-use loop, is a script of one response per turn.

    with AnthropicServer() as server:
        server.enqueue(anthropic_error(401, "authentication_error", "bad key"))
        ...  # point the SDK at server.url
        assert server.requests[0].path == "/v1/messages"
"""

from __future__ import annotations

import collections
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

LOOPBACK = "127.0.0.1"
# Fake keys: the loopback servers accept anything, and no real key is needed.
FAKE_ANTHROPIC_KEY = "sk-ant-test-0000-not-a-real-key"
FAKE_GEMINI_KEY = "AIzaTest-gemini-not-a-real-key"
FAKE_GOOGLE_KEY = "AIzaTest-google-not-a-real-key"
# Variables that the SDKs read and that would point the tests elsewhere.
SDK_ENV = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_CUSTOM_HEADERS",
    "ANTHROPIC_PROFILE",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_GENAI_API_VERSION",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GENAI_USE_ENTERPRISE",
    "GOOGLE_GENAI_CLIENT_MODE",
)
# Bounds the shutdown of the server thread and the wait on idle keep-alive
# connections, so that a stuck client cannot hang a test.
STOP_TIMEOUT_S = 5.0
GEMINI_PATH = re.compile(r"^/(v1|v1beta)/models/(?P<model>[^/:]+):generateContent$")


@dataclass(frozen=True)
class RecordedRequest:
    """An HTTP request as the server received it."""

    method: str
    path: str
    # Names are lower case.
    headers: dict[str, str]
    # The parsed JSON body, or the raw text when the body is not JSON.
    body: Any


@dataclass(frozen=True)
class ScriptedResponse:
    """An HTTP response for the server to send, with a JSON `body` unless bytes."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


Reply = ScriptedResponse | Callable[[RecordedRequest], ScriptedResponse]


class ProviderServer:
    """A recording, scripted HTTP server on the loopback interface."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._script: collections.deque[Reply] = collections.deque()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Return the base URL, such as http://127.0.0.1:40123."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return f"http://{LOOPBACK}:{self._httpd.server_address[1]}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Return a copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def sent_text(self) -> str:
        """Return every request body received so far as one JSON text."""
        return "\n".join(json.dumps(request.body) for request in self.requests)

    def enqueue(self, *replies: Reply) -> None:
        """Append responses to the script, which requests consume oldest first."""
        with self._lock:
            self._script.extend(replies)

    def start(self) -> Self:
        """Listen on a free loopback port and serve in a daemon thread."""
        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{self._httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def default_reply(self, request: RecordedRequest) -> ScriptedResponse:
        """Build the response for a request that finds the script empty."""
        raise NotImplementedError

    def _answer(self, request: RecordedRequest) -> ScriptedResponse:
        with self._lock:
            self._requests.append(request)
            reply = self._script.popleft() if self._script else None
        if reply is None:
            return self.default_reply(request)
        if isinstance(reply, ScriptedResponse):
            return reply
        return reply(request)


def _handler_for(server: ProviderServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 keeps connections open as the SDKs expect.
        protocol_version = "HTTP/1.1"
        timeout = STOP_TIMEOUT_S

        def do_POST(self) -> None:
            self._serve()

        def do_GET(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = RecordedRequest(
                method=self.command,
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=_parse_body(raw),
            )
            self._send(server._answer(request))

        def _send(self, response: ScriptedResponse) -> None:
            body = response.body
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(response.status)
            headers = {"content-type": "application/json", **response.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up first, as a test of a timeout makes it.
                self.close_connection = True

    return Handler


def _parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


# Anthropic Messages API


class AnthropicServer(ProviderServer):
    """A Messages API server: `POST /v1/messages`."""

    def default_reply(self, request: RecordedRequest) -> ScriptedResponse:
        """Respond to a well-formed request with a short text message."""
        if request.method != "POST" or request.path != "/v1/messages":
            return anthropic_error(404, "not_found_error", f"{request.path} not found")
        model = (request.body or {}).get("model", "claude-unknown")
        return ScriptedResponse(body=anthropic_message(model=model, text="Hello."))


def anthropic_message(
    *,
    model: str,
    text: str | None = None,
    content: list[dict[str, Any]] | None = None,
    stop_reason: str = "end_turn",
    input_tokens: int = 10,
    output_tokens: int = 5,
    message_id: str = "msg_01TestMessage",
) -> dict[str, Any]:
    """Build a message body; `content` blocks (such as tool_use) replace `text`."""
    blocks = content if content is not None else [{"type": "text", "text": text or ""}]
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def anthropic_tool_use(
    *,
    model: str,
    calls: list[tuple[str, str, dict[str, Any]]],
    text: str = "",
    input_tokens: int = 10,
    output_tokens: int = 5,
) -> ScriptedResponse:
    """Build a turn that asks for tools: `calls` are (id, name, input) triples."""
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    blocks += [
        {"type": "tool_use", "id": call_id, "name": name, "input": arguments}
        for call_id, name, arguments in calls
    ]
    body = anthropic_message(
        model=model,
        content=blocks,
        stop_reason="tool_use",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )
    return ScriptedResponse(body=body)


def anthropic_tool_results(request: RecordedRequest) -> list[dict[str, Any]]:
    """Return the tool_result blocks of a request's last user message."""
    last = request.body["messages"][-1]
    assert last["role"] == "user"
    return [block for block in last["content"] if block["type"] == "tool_result"]


def anthropic_error(
    status: int,
    error_type: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    request_id: str = "req_01TestRequest",
) -> ScriptedResponse:
    """Build an error response, such as 401 authentication_error."""
    return ScriptedResponse(
        status=status,
        body={
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        },
        headers={"request-id": request_id, **(headers or {})},
    )


# Gemini generateContent API


class GeminiServer(ProviderServer):
    """A Gemini API server: `POST /v1/models/<model>:generateContent` (or v1beta)."""

    def default_reply(self, request: RecordedRequest) -> ScriptedResponse:
        """Respond to a well-formed request with a short text response."""
        match = GEMINI_PATH.match(request.path)
        if request.method != "POST" or match is None:
            return gemini_error(404, "NOT_FOUND", f"{request.path} not found")
        return ScriptedResponse(
            body=gemini_response(model_version=match["model"], text="Hello.")
        )


def gemini_response(
    *,
    model_version: str,
    text: str | None = None,
    parts: list[dict[str, Any]] | None = None,
    finish_reason: str = "STOP",
    prompt_tokens: int = 10,
    candidates_tokens: int = 5,
    thoughts_tokens: int | None = None,
    response_id: str = "test-response-1",
) -> dict[str, Any]:
    """Build a generateContent body; `parts` (such as functionCall) replace `text`."""
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": prompt_tokens + candidates_tokens + (thoughts_tokens or 0),
    }
    if thoughts_tokens is not None:
        usage["thoughtsTokenCount"] = thoughts_tokens
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": parts if parts is not None else [{"text": text or ""}],
                },
                "finishReason": finish_reason,
                "index": 0,
            }
        ],
        "usageMetadata": usage,
        "modelVersion": model_version,
        "responseId": response_id,
    }


def gemini_function_call(
    *,
    model_version: str,
    calls: list[tuple[str, dict[str, Any]]],
    prompt_tokens: int = 10,
    candidates_tokens: int = 5,
) -> ScriptedResponse:
    """Build a turn that calls functions: `calls` are (name, args) pairs."""
    parts = [
        {"functionCall": {"id": f"call-{index}", "name": name, "args": arguments}}
        for index, (name, arguments) in enumerate(calls, 1)
    ]
    body = gemini_response(
        model_version=model_version,
        parts=parts,
        prompt_tokens=prompt_tokens,
        candidates_tokens=candidates_tokens,
    )
    return ScriptedResponse(body=body)


def gemini_function_responses(request: RecordedRequest) -> list[dict[str, Any]]:
    """Return the functionResponse objects of a request's last user turn."""
    last = request.body["contents"][-1]
    assert last["role"] == "user"
    return [part["functionResponse"] for part in last["parts"]]


def gemini_blocked(
    block_reason: str = "SAFETY", *, model_version: str
) -> dict[str, Any]:
    """Build the body Gemini sends when it blocks the prompt: no candidates."""
    return {
        "promptFeedback": {"blockReason": block_reason},
        "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10},
        "modelVersion": model_version,
    }


def gemini_error(
    status: int,
    grpc_status: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> ScriptedResponse:
    """Build an error response, such as 429 RESOURCE_EXHAUSTED."""
    return ScriptedResponse(
        status=status,
        body={"error": {"code": status, "message": message, "status": grpc_status}},
        headers=dict(headers or {}),
    )
