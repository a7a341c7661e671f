"""NATS credentials and provider keys: where they come from and how they are used.

NATS credentials are settings, so they come from `SUPERPOOL_NATS_*`
variables. Each secret can be given as a value or as a file. A file is read
by every `bus.connection.connect()` call, so a rotated Kubernetes secret takes
effect when the process restarts. nats-py's own reconnects reuse the password
or token read first, but read an nkey seed file again for every signature.
One connection uses exactly one of these: user and password, a token, an
nkey seed file or a creds file (JWT and seed).

Provider keys (`ANTHROPIC_API_KEY`, `GEMINI_API_KEY`, `GOOGLE_API_KEY`) are
read by the adapters from the runner's environment. `load_provider_keys`
copies them there from files at runner start, for secrets mounted as files.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bus.errors import ConfigError

if TYPE_CHECKING:
    from bus.settings import Settings

logger = logging.getLogger(__name__)

# Settings that contain a secret value; repr() shows them masked.
SECRET_FIELDS = ("nats_password", "nats_token", "proxy_token")
MASK = "***"
# The variables that runner/adapters/claude.py and gemini.py read.
PROVIDER_KEY_NAMES = ("ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")
# `<NAME>_FILE` names a file that contains the value of `<NAME>`, a
# convention of many official server images.
FILE_SUFFIX = "_FILE"
# A secret file larger than this is a wrong path, not a key.
MAX_SECRET_FILE_BYTES = 64 * 1024
# Inbox prefixes are NATS subject tokens without wildcards, so that a
# permission such as "_INBOX.alice.>" can match them. The length bound keeps
# the reply header inside the room that bus/limits.py keeps for headers.
INBOX_PREFIX_PATTERN = re.compile(r"^[^.*>\s]+(\.[^.*>\s]+)*$")
MAX_INBOX_PREFIX_CHARS = 128

# Each auth method and the settings that select it.
_METHODS = {
    "user and password": ("nats_user", "nats_password", "nats_password_file"),
    "token": ("nats_token", "nats_token_file"),
    "nkey seed": ("nats_nkey_seed_file",),
    "creds file": ("nats_creds_file",),
}


def check_credential_settings(settings: Settings) -> None:
    """Reject credential settings that are ambiguous, incomplete or would be logged.

    Raises:
        ConfigError: two auth methods are set, a password has no user, a
            secret is given both as a value and as a file, the NATS URL
            carries credentials, or the inbox prefix is not a valid subject.
    """
    _check_single_method(settings)
    _check_one_of(settings, "nats_password", "nats_password_file")
    _check_one_of(settings, "nats_token", "nats_token_file")
    if (settings.nats_password or settings.nats_password_file) and not (
        settings.nats_user
    ):
        raise ConfigError(
            "nats_user",
            "a NATS password is set but SUPERPOOL_NATS_USER is empty; set the user",
        )
    _check_url(settings.nats_url)
    _check_inbox_prefix(settings.inbox_prefix)


def _check_single_method(settings: Settings) -> None:
    chosen = [
        method
        for method, names in _METHODS.items()
        if any(getattr(settings, name) for name in names)
    ]
    if len(chosen) > 1:
        raise ConfigError(
            "nats credentials",
            f"NATS credentials for {' and '.join(chosen)} are set; set only one "
            "auth method for a connection",
        )


def _check_url(nats_url: str) -> None:
    for url in nats_url.split(","):
        if "@" in urlsplit(url.strip()).netloc:
            raise ConfigError(
                "nats_url",
                "SUPERPOOL_NATS_URL contains credentials, and the URL is written "
                "to logs and error messages; move them to SUPERPOOL_NATS_USER "
                "and SUPERPOOL_NATS_PASSWORD_FILE (or SUPERPOOL_NATS_TOKEN_FILE)",
            )


def _check_inbox_prefix(prefix: str) -> None:
    if len(prefix) > MAX_INBOX_PREFIX_CHARS or not INBOX_PREFIX_PATTERN.match(prefix):
        raise ConfigError(
            "inbox_prefix",
            f"inbox_prefix {prefix!r} is invalid: use at most "
            f"{MAX_INBOX_PREFIX_CHARS} characters of dot-separated subject tokens "
            "without spaces, '*' or '>', such as '_INBOX.alice'",
        )


def _check_one_of(settings: Settings, value_field: str, file_field: str) -> None:
    if getattr(settings, value_field) and getattr(settings, file_field):
        raise ConfigError(
            value_field,
            f"both SUPERPOOL_{value_field.upper()} and "
            f"SUPERPOOL_{file_field.upper()} are set; set only one",
        )


def masked_repr(settings: Settings) -> str:
    """Return the settings' repr with every secret value replaced by `MASK`."""
    parts = []
    for name in settings.__struct_fields__:
        value = getattr(settings, name)
        if name in SECRET_FIELDS and value:
            value = MASK
        parts.append(f"{name}={value!r}")
    return f"{type(settings).__name__}({', '.join(parts)})"


def connect_options(settings: Settings) -> dict[str, Any]:
    """Return the nats-py `connect()` arguments for the configured credentials.

    Raises:
        ConfigError: a credential file cannot be read or is empty.
    """
    options: dict[str, Any] = {"inbox_prefix": settings.inbox_prefix}
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password or read_secret_file(
            settings.nats_password_file, "nats_password_file"
        )
    elif settings.nats_token or settings.nats_token_file:
        options["token"] = settings.nats_token or read_secret_file(
            settings.nats_token_file, "nats_token_file"
        )
    elif settings.nats_nkey_seed_file:
        # nats-py reads the seed file again for every signature, so only
        # check here that it is readable.
        read_secret_file(settings.nats_nkey_seed_file, "nats_nkey_seed_file")
        options["nkeys_seed"] = settings.nats_nkey_seed_file
    elif settings.nats_creds_file:
        read_secret_file(settings.nats_creds_file, "nats_creds_file")
        options["user_credentials"] = settings.nats_creds_file
    return options


def read_secret_file(path: str, field: str) -> str:
    """Return the stripped text of a secret file; the error never shows its content.

    Raises:
        ConfigError: the file is missing, unreadable, too large or empty.
    """
    if not path:
        return ""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            field,
            f"{field} {path!r} could not be read: {exc.strerror}; mount the "
            "secret there or correct the path",
        ) from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(
            field,
            f"{field} {path!r} is larger than {MAX_SECRET_FILE_BYTES} bytes, so it "
            "is not a secret file; correct the path",
        )
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(field, f"{field} {path!r} is not UTF-8 text") from None
    if not text:
        raise ConfigError(field, f"{field} {path!r} is empty; write the secret in it")
    return text


def load_provider_keys(
    settings: Settings, environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """Put provider keys from files into the environment, and return their names.

    For each of `PROVIDER_KEY_NAMES` that is not set already, the value comes
    from the file named by `<NAME>_FILE`, or else from `<secrets_dir>/<NAME>`
    (a Kubernetes secret mounted as a directory, one file per key).

    Raises:
        ConfigError: a key is set both directly and through `<NAME>_FILE`, or
            a key file cannot be read.
    """
    environ = os.environ if environ is None else environ
    loaded = []
    for name in PROVIDER_KEY_NAMES:
        file_variable = name + FILE_SUFFIX
        path = environ.get(file_variable, "")
        if environ.get(name) and path:
            raise ConfigError(
                name, f"both {name} and {file_variable} are set; set only one"
            )
        if environ.get(name):
            continue
        if not path and settings.secrets_dir:
            candidate = Path(settings.secrets_dir) / name
            path = str(candidate) if candidate.is_file() else ""
        if not path:
            continue
        environ[name] = read_secret_file(path, file_variable)
        loaded.append(name)
        logger.info("provider key loaded name=%s path=%s", name, path)
    return loaded
