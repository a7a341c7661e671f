"""The nats-server config reader that the Helm values test relies on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.manifests import natsconf


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_natsconf_entries(tmp_path: Path) -> None:
    config = natsconf.load(
        write(
            tmp_path / "a.conf",
            "port: 4222\nname = 'x'; debug true\n// comment\n"
            'limits { max: 1MB, list: [a, "b c", {k: v}] }  # trailing\n',
        )
    )
    assert config == {
        "port": 4222,
        "name": "x",
        "debug": True,
        "limits": {"max": "1MB", "list": ["a", "b c", {"k": "v"}]},
    }


def test_natsconf_variables(tmp_path: Path) -> None:
    config = natsconf.load(
        write(
            tmp_path / "a.conf",
            'PERMS = {publish: ["$JS.API.>"]}\n'
            "users: [{user: u, password: $SECRET, permissions: $PERMS}]\n",
        )
    )
    user = config["users"][0]
    assert user["password"] == natsconf.EnvRef("SECRET")
    assert user["permissions"] == {"publish": ["$JS.API.>"]}


def test_natsconf_include(tmp_path: Path) -> None:
    write(tmp_path / "vars.conf", "LIST = [x, y]\n")
    config = natsconf.load(
        write(tmp_path / "main.conf", 'include "vars.conf"\nitems: $LIST\n')
    )
    assert config["items"] == ["x", "y"]


def test_natsconf_parse_value() -> None:
    assert natsconf.parse_value("1MB") == "1MB"
    assert natsconf.parse_value("$NATS_X") == natsconf.EnvRef("NATS_X")
    assert natsconf.parse_value("12") == 12


@pytest.mark.parametrize("text", ["a { b: 1", "a: [1, 2", 'a: "x'])
def test_natsconf_unterminated(tmp_path: Path, text: str) -> None:
    with pytest.raises(natsconf.ConfigSyntaxError):
        natsconf.load(write(tmp_path / "a.conf", text))
