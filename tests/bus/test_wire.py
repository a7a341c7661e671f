"""Wire types and settings reject bad values with the field and the rule."""

from __future__ import annotations

import pytest

from bus.errors import ConfigError, InvalidRequestError
from bus.settings import Settings
from bus.wire import RunResult, Status, decode_request, decode_result, encode

BAD_REQUESTS = [
    (b'{"task": "a b", "prompt_text": "x"}', "Expected `str` matching regex"),
    (b'{"task": "t"}', "give exactly one of prompt_text and prompt_file"),
    (b'{"task": "t", "prompt_text": "x", "prompt_file": "f"}', "exactly one of"),
    (
        b'{"task": "t", "prompt_text": "x", "adapter": "gpt"}',
        "adapter 'gpt' is unknown",
    ),
    (
        b'{"task": "t", "prompt_text": "x", "cwd_mode": "host"}',
        "cwd_mode 'host' is unknown",
    ),
    (b'{"task": "t", "prompt_text": "x", "cwd_mode": "caller"}', "needs caller_cwd"),
    (b'{"task": "t", "prompt_text": "x", "timeout_s": 0}', "Expected `float` > 0.0"),
    (
        b'{"task": "t", "prompt_text": 5}',
        "Expected `str | null`, got `int` - at `$.prompt_text`",
    ),
    (b'{"task": "t", "prompt_text": "x", "run_id": "a/b"}', "at `$.run_id`"),
    (b"\xff\xfe", "invalid run request"),
]


@pytest.mark.parametrize(("payload", "message"), BAD_REQUESTS)
def test_decode_request_names_rule(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decode_request(payload)
    assert message in str(caught.value)


def test_decode_request_defaults() -> None:
    request = decode_request(b'{"task": "hello", "prompt_text": "hi"}')
    assert request.adapter == "claude"
    assert request.cwd_mode == "isolated"
    assert request.run_id == ""
    assert request.timeout_s is None


def test_result_round_trip() -> None:
    result = RunResult(run_id="r1", status=Status.POOL_BUSY, retry_after_s=0.5)
    decoded = decode_result(encode(result))
    assert decoded == result
    assert decoded.status is Status.POOL_BUSY
    assert b'"status":"POOL_BUSY"' in encode(result)


def test_settings_from_env() -> None:
    settings = Settings.from_env(
        {
            "SUPERPOOL_NATS_URL": "nats://10.0.0.1:4222",
            "SUPERPOOL_SLOTS": "4",
            "SUPERPOOL_WORKSPACE_ROOTS": "/srv/a:/srv/b",
            "SUPERPOOL_REQUEST_TIMEOUT": "1.5",
        }
    )
    assert settings.nats_url == "nats://10.0.0.1:4222"
    assert settings.slots == 4
    assert settings.workspace_roots == ("/srv/a", "/srv/b")
    assert settings.request_timeout == 1.5


def test_settings_default_url() -> None:
    assert Settings.from_env({}).nats_url == "nats://127.0.0.1:4222"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SUPERPOOL_SLOTS": "three"}, "SUPERPOOL_SLOTS='three' is not a valid int"),
        ({"SUPERPOOL_SLOTS": "0"}, "slots must be greater than 0, got 0"),
        (
            {"SUPERPOOL_WORKSPACE_ROOTS": "relative/dir"},
            "workspace root 'relative/dir' is relative",
        ),
        ({"SUPERPOOL_HEARTBEAT_TTL_S": "1"}, "heartbeat_ttl_s (1) must be larger"),
        ({"SUPERPOOL_NATS_URL": ""}, "SUPERPOOL_NATS_URL is empty"),
        ({"SUPERPOOL_NATS_URL": " , "}, "SUPERPOOL_NATS_URL is empty"),
        ({"SUPERPOOL_NATS_URL": "http://x:1"}, "NATS URL 'http://x:1' is invalid"),
        ({"SUPERPOOL_PROXY_PORT": "99999"}, "proxy_port 99999 is invalid"),
    ],
)
def test_settings_reject_bad_values(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    assert message in str(caught.value)
