"""A reader for the nats-server config files in manifests/nats/, for the tests.

It covers the parts of the nats-server config format that those files use.
Those are maps in braces, arrays in brackets, and `key: value`,
`key = value` or `key value` entries separated by newlines, commas or
semicolons. Values are quoted or bare strings, numbers, booleans and
`$NAME` variables; `#` and `//` start comments, and `include "file"` reads
another file. A variable resolves to the nearest key of that name defined
before it in the enclosing maps, as nats-server resolves it. Any other
variable comes from the server's environment at start and is returned as
an `EnvRef`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Characters that end a bare key or value.
BARE_END = set(" \t\r\n,;{}[]#:=")
VALUE_END = set(" \t\r\n,;}]#")
VARIABLE = re.compile(r"\$([A-Za-z0-9_]+)")
BOOLEANS = {
    "true": True,
    "yes": True,
    "on": True,
    "false": False,
    "no": False,
    "off": False,
}
INTEGER = re.compile(r"^-?\d+$")


class ConfigSyntaxError(ValueError):
    """The text is not valid in the subset of the format this reader covers."""


@dataclass(frozen=True)
class EnvRef:
    """A `$NAME` variable that nats-server reads from its environment."""

    name: str


def load(path: Path) -> dict[str, Any]:
    """Parse the config file at `path`, includes and variables resolved."""
    return _Parser(path.read_text(), path.parent, []).parse()


def parse_value(text: str) -> Any:
    """Parse one bare value, such as `1MB`, `true` or `$X`, as nats-server would."""
    parser = _Parser(text, Path("."), [])
    value = parser.value()
    parser.skip_blank()
    if parser.pos != len(text):
        raise ConfigSyntaxError(f"trailing text after the value in {text!r}")
    return value


class _Parser:
    def __init__(self, text: str, base: Path, scopes: list[dict[str, Any]]) -> None:
        self.text = text
        self.base = base
        self.pos = 0
        self.scopes = scopes

    def parse(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        self.scopes.append(result)
        self.entries(result, end=None)
        self.scopes.pop()
        return result

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_blank(self) -> None:
        """Skip whitespace, entry separators and comments."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r\n,;":
                self.pos += 1
            elif char == "#" or self.text.startswith("//", self.pos):
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def entries(self, target: dict[str, Any], end: str | None) -> None:
        while True:
            self.skip_blank()
            if not self.peek():
                if end is not None:
                    raise ConfigSyntaxError(f"missing {end!r} at the end of the text")
                return
            if self.peek() == end:
                self.pos += 1
                return
            key = self.key()
            if key == "include":
                self.include(target)
                continue
            self.key_separator()
            target[key] = self.value()

    def include(self, target: dict[str, Any]) -> None:
        self.key_separator()
        name = self.value()
        if not isinstance(name, str):
            raise ConfigSyntaxError(f"include needs a file name, got {name!r}")
        path = self.base / name
        included = _Parser(path.read_text(), path.parent, self.scopes)
        included.entries(target, end=None)

    def key(self) -> str:
        if self.peek() in "\"'":
            return self.quoted()
        start = self.pos
        while self.peek() and self.peek() not in BARE_END:
            self.pos += 1
        if self.pos == start:
            raise ConfigSyntaxError(f"expected a key at offset {start}")
        return self.text[start : self.pos]

    def key_separator(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1
        if self.peek() in (":", "="):
            self.pos += 1
        while self.peek() in (" ", "\t"):
            self.pos += 1

    def value(self) -> Any:
        char = self.peek()
        if char == "{":
            self.pos += 1
            block: dict[str, Any] = {}
            self.scopes.append(block)
            self.entries(block, end="}")
            self.scopes.pop()
            return block
        if char == "[":
            self.pos += 1
            return self.array()
        if char in "\"'":
            return self.quoted()
        start = self.pos
        while self.peek() and self.peek() not in VALUE_END:
            self.pos += 1
        token = self.text[start : self.pos]
        if not token:
            raise ConfigSyntaxError(f"expected a value at offset {start}")
        return self.bare(token)

    def array(self) -> list[Any]:
        items = []
        while True:
            self.skip_blank()
            if not self.peek():
                raise ConfigSyntaxError("missing ']' at the end of the text")
            if self.peek() == "]":
                self.pos += 1
                return items
            items.append(self.value())

    def quoted(self) -> str:
        quote = self.peek()
        end = self.text.find(quote, self.pos + 1)
        if end < 0:
            raise ConfigSyntaxError(f"unterminated string at offset {self.pos}")
        text = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return text

    def bare(self, token: str) -> Any:
        variable = VARIABLE.fullmatch(token)
        if variable:
            return self.resolve(variable.group(1))
        if token.lower() in BOOLEANS:
            return BOOLEANS[token.lower()]
        if INTEGER.match(token):
            return int(token)
        return token

    def resolve(self, name: str) -> Any:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return EnvRef(name)
