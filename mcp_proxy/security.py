"""Access control over HTTP: the Host header check and the bearer token.

The SDK's Host check guards against DNS rebinding: a web page that makes its
own name resolve to 127.0.0.1 would otherwise reach a proxy on loopback from
the user's browser. The SDK turns the check on only when the bind address is
a loopback name. This proxy keeps it on for every address and accepts the
loopback names plus `proxy_allowed_hosts`. So a proxy bound to 0.0.0.0
rejects requests that name a Service (421) until its names are allowed.

The token check uses the SDK's bearer-token hook (`TokenVerifier`): a
request without `Authorization: Bearer <proxy_token>` gets 401 from the SDK
before it reaches the MCP session manager.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl

from bus.credentials import read_secret_file
from bus.errors import ConfigError
from bus.settings import Settings

logger = logging.getLogger(__name__)

# Host header values of a request to a loopback address, with any port.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# The entry of proxy_allowed_hosts that turns the Host check off.
ANY_HOST = "*"
# Bind addresses that stand for every interface; they never appear in Host.
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
# Client id that requests with the proxy's token get in the SDK's auth context.
TOKEN_CLIENT_ID = "superpool-proxy-token"
# AuthSettings requires an authorization server URL. The proxy runs none and
# sets no resource_server_url, so the SDK publishes no OAuth metadata and
# never shows this value to a client.
UNUSED_ISSUER_URL = "http://localhost/"


class StaticTokenVerifier:
    """Accept exactly one bearer token, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if not hmac.compare_digest(token.encode(), self._token):
            return None
        return AccessToken(token=token, client_id=TOKEN_CLIENT_ID, scopes=[])


def auth_settings() -> AuthSettings:
    """Return the SDK auth settings for a token-only resource server."""
    return AuthSettings(
        issuer_url=AnyHttpUrl(UNUSED_ISSUER_URL), resource_server_url=None
    )


def load_token(settings: Settings) -> str:
    """Return the bearer token that HTTP requests need, or "" for none.

    Raises:
        ConfigError: both `proxy_token` and `proxy_token_file` are set, or
            the file cannot be read or is empty.
    """
    if settings.proxy_token and settings.proxy_token_file:
        raise ConfigError(
            "proxy_token",
            "both SUPERPOOL_PROXY_TOKEN and SUPERPOOL_PROXY_TOKEN_FILE are set; "
            "set only one",
        )
    if settings.proxy_token:
        return settings.proxy_token.strip()
    return read_secret_file(settings.proxy_token_file, "proxy_token_file")


def allowed_host_entries(settings: Settings) -> list[str]:
    """Split `proxy_allowed_hosts` into its entries, without blanks.

    Raises:
        ConfigError: an entry is a URL or contains a space.
    """
    entries = []
    for part in settings.proxy_allowed_hosts.split(","):
        entry = part.strip()
        if not entry:
            continue
        if "/" in entry or " " in entry:
            raise ConfigError(
                "proxy_allowed_hosts",
                f"proxy_allowed_hosts entry {entry!r} is invalid: give a host name "
                "as clients send it in the Host header, such as 'superpool-proxy' "
                "or 'superpool-proxy:8765', without a scheme or path",
            )
        entries.append(entry)
    return entries


def transport_security(settings: Settings, bind_host: str) -> TransportSecuritySettings:
    """Build the SDK's Host and Origin check for a server bound to `bind_host`."""
    entries = allowed_host_entries(settings)
    if ANY_HOST in entries:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    names = [*LOOPBACK_HOSTS, *entries]
    if bind_host not in WILDCARD_ADDRESSES and not is_loopback(bind_host):
        names.append(_url_host(bind_host))
    hosts: list[str] = []
    origins: list[str] = []
    for name in dict.fromkeys(names):
        hosts.extend(_host_patterns(name))
        origins.extend(
            f"{scheme}://{pattern}"
            for scheme in ("http", "https")
            for pattern in _host_patterns(name)
        )
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=origins,
    )


def check_exposure(settings: Settings, bind_host: str, token: str) -> None:
    """Log what a non-loopback bind address exposes, and how to change it."""
    if is_loopback(bind_host):
        return
    entries = allowed_host_entries(settings)
    if ANY_HOST in entries:
        logger.warning(
            "proxy host check is off host=%s; any Host header is accepted", bind_host
        )
    elif not entries:
        logger.warning(
            "proxy binds host=%s but accepts only loopback Host headers; set "
            "SUPERPOOL_PROXY_ALLOWED_HOSTS to the names clients use, such as the "
            "Service name",
            bind_host,
        )
    if not token:
        logger.warning(
            "proxy binds host=%s without a bearer token; anyone who can reach it "
            "can start runs; set SUPERPOOL_PROXY_TOKEN_FILE",
            bind_host,
        )


def is_loopback(host: str) -> bool:
    """Tell whether `host` is a loopback name or address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_patterns(name: str) -> list[str]:
    # The SDK matches a Host value exactly, or "name:*" for name with any port.
    # A Host header carries no port when the client uses the default one.
    if _has_port(name):
        return [name]
    return [name, f"{name}:*"]


def _has_port(name: str) -> bool:
    if name.startswith("["):
        return "]:" in name
    return ":" in name


def _url_host(address: str) -> str:
    # An IPv6 address needs brackets in a Host header.
    return f"[{address}]" if ":" in address and not address.startswith("[") else address
