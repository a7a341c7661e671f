"""The model catalog: loading, validation, model resolution and cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ConfigError, InvalidRequestError
from bus.wire import Usage
from runner.catalog import Catalog

# A valid catalog with one model per adapter. The load tests break one line.
MINIMAL = """
[adapters.claude]
default = "claude-sonnet-4-6"

[adapters.claude.models."claude-sonnet-4-6"]
aliases = ["sonnet"]
input_usd_per_mtok = 3.0
output_usd_per_mtok = 15.0

[adapters.gemini]
default = "gemini-2.5-flash"

[adapters.gemini.models."gemini-2.5-flash"]
aliases = ["flash"]
input_usd_per_mtok = 0.3
output_usd_per_mtok = 2.5

[adapters.echo]
default = "echo"

[adapters.echo.models."echo"]
input_usd_per_mtok = 0.0
output_usd_per_mtok = 0.0
"""

SHIPPED_MODELS = {
    "claude": ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6"],
    "gemini": ["gemini-2.5-flash-lite", "gemini-2.5-flash", "gemini-2.5-pro"],
    "echo": ["echo"],
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def write_catalog(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def broken(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new, 1)


def test_shipped_catalog_lists_models(catalog: Catalog) -> None:
    assert set(catalog.adapters) == set(SHIPPED_MODELS)
    for adapter, names in SHIPPED_MODELS.items():
        assert [model.name for model in catalog.models(adapter)] == names


def test_shipped_catalog_defaults(catalog: Catalog) -> None:
    assert catalog.default_model("claude") == "claude-sonnet-4-6"
    assert catalog.default_model("gemini") == "gemini-2.5-flash-lite"
    assert catalog.default_model("echo") == "echo"


@pytest.mark.parametrize(
    ("adapter", "hint", "expected"),
    [
        ("claude", "claude-sonnet-4-6", "claude-sonnet-4-6"),
        ("claude", "claude-haiku-4-5", "claude-haiku-4-5"),
        ("claude", "claude-opus-4-6", "claude-opus-4-6"),
        ("gemini", "gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("gemini", "gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini", "gemini-2.5-pro", "gemini-2.5-pro"),
    ],
)
def test_catalog_resolves_names(
    catalog: Catalog, adapter: str, hint: str, expected: str
) -> None:
    assert catalog.resolve(adapter, hint) == (expected, ())


@pytest.mark.parametrize(
    ("adapter", "hint", "expected"),
    [
        ("claude", "sonnet", "claude-sonnet-4-6"),
        ("claude", "haiku", "claude-haiku-4-5"),
        ("claude", "opus", "claude-opus-4-6"),
        ("claude", " Opus ", "claude-opus-4-6"),
        ("gemini", "flash-lite", "gemini-2.5-flash-lite"),
        ("gemini", "flash", "gemini-2.5-flash"),
        ("gemini", "pro", "gemini-2.5-pro"),
        ("gemini", "GEMINI-2.5-PRO", "gemini-2.5-pro"),
    ],
)
def test_catalog_resolves_aliases(
    catalog: Catalog, adapter: str, hint: str, expected: str
) -> None:
    assert catalog.resolve(adapter, hint) == (expected, ())


@pytest.mark.parametrize("hint", [None, "", "   "])
def test_catalog_empty_hint_gives_default(catalog: Catalog, hint: str | None) -> None:
    assert catalog.resolve("claude", hint) == ("claude-sonnet-4-6", ())
    assert catalog.resolve("gemini", hint) == ("gemini-2.5-flash-lite", ())


def test_catalog_unknown_hint_gives_note(catalog: Catalog) -> None:
    model, notes = catalog.resolve("claude", "gpt-9")

    assert model == "claude-sonnet-4-6"
    assert notes == (
        "model_hint 'gpt-9' is not in the catalog for adapter claude; "
        "used claude-sonnet-4-6",
    )


def test_catalog_other_adapter_hint_gives_note(catalog: Catalog) -> None:
    model, notes = catalog.resolve("claude", "gemini-2.5-pro")

    assert model == "claude-sonnet-4-6"
    assert notes == (
        "model_hint 'gemini-2.5-pro' is a model of adapter gemini, not claude; "
        "used claude-sonnet-4-6",
    )


def test_catalog_other_adapter_alias_gives_note(catalog: Catalog) -> None:
    model, notes = catalog.resolve("gemini", "sonnet")

    assert model == "gemini-2.5-flash-lite"
    [note] = notes
    assert "'sonnet' is a model of adapter claude, not gemini" in note


@pytest.mark.parametrize("hint", [None, "delay=2.5", "fail", "delay=1,fail", "sonnet"])
def test_catalog_echo_ignores_hint(catalog: Catalog, hint: str | None) -> None:
    assert catalog.resolve("echo", hint) == ("echo", ())


def test_catalog_rejects_unknown_adapter(catalog: Catalog) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        catalog.resolve("gpt", "gpt-9")

    assert "'gpt'" in str(caught.value)
    assert caught.value.field == "adapter"


@pytest.mark.parametrize(
    ("adapter", "model", "input_tokens", "output_tokens", "expected"),
    [
        ("claude", "claude-sonnet-4-6", 1000, 500, 0.0105),
        ("claude", "claude-haiku-4-5", 1000, 500, 0.0035),
        ("claude", "claude-opus-4-6", 1000, 500, 0.0175),
        ("claude", "sonnet", 1_000_000, 0, 3.0),
        ("gemini", "gemini-2.5-flash-lite", 1_000_000, 1_000_000, 0.5),
        ("gemini", "gemini-2.5-flash", 2000, 1000, 0.0031),
        ("gemini", "gemini-2.5-pro", 10_000, 10_000, 0.1125),
        ("echo", "echo", 12, 12, 0.0),
        ("claude", "claude-sonnet-4-6", 0, 0, 0.0),
    ],
)
def test_catalog_cost_is_exact(
    catalog: Catalog,
    adapter: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    expected: float,
) -> None:
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)

    assert catalog.cost(adapter, model, usage) == expected


def test_catalog_cost_prices_dated_snapshot(catalog: Catalog) -> None:
    usage = Usage(input_tokens=1000, output_tokens=500)

    assert catalog.cost("claude", "claude-sonnet-4-6-20250929", usage) == 0.0105
    lite = catalog.price("gemini", "gemini-2.5-flash-lite-preview-09-2025")
    assert lite is not None
    assert lite.name == "gemini-2.5-flash-lite"


def test_catalog_cost_rejects_unpriced_model(catalog: Catalog) -> None:
    with pytest.raises(ConfigError) as caught:
        catalog.cost("claude", "claude-sonnet-9", Usage(input_tokens=1))

    message = str(caught.value)
    assert "'claude-sonnet-9'" in message
    assert "claude-sonnet-4-6" in message


def test_catalog_load_reads_given_path(tmp_path: Path) -> None:
    catalog = Catalog.load(str(write_catalog(tmp_path, MINIMAL)))

    assert catalog.default_model("gemini") == "gemini-2.5-flash"
    assert catalog.resolve("gemini", "flash-lite") == (
        "gemini-2.5-flash",
        (
            "model_hint 'flash-lite' is not in the catalog for adapter gemini; "
            "used gemini-2.5-flash",
        ),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            broken('default = "claude-sonnet-4-6"', 'default = "claude-sonnet-9"'),
            ["adapters.claude.default", "'claude-sonnet-9'", "claude-sonnet-4-6"],
            id="default-not-a-model",
        ),
        pytest.param(
            broken("input_usd_per_mtok = 3.0", 'input_usd_per_mtok = "three"'),
            ["`adapters.claude.models.claude-sonnet-4-6.input_usd_per_mtok`", "float"],
            id="price-not-a-number",
        ),
        pytest.param(
            broken("output_usd_per_mtok = 2.5", "output_usd_per_mtok = -2.5"),
            ["`adapters.gemini.models.gemini-2.5-flash.output_usd_per_mtok`", ">= 0"],
            id="negative-price",
        ),
        pytest.param(
            broken("input_usd_per_mtok = 0.3", "input_usd_per_mtoken = 0.3"),
            ["`input_usd_per_mtoken`", "`adapters.gemini.models.gemini-2.5-flash`"],
            id="misspelt-field",
        ),
        pytest.param(
            broken('default = "echo"\n', ""),
            ["`default`", "`adapters.echo`"],
            id="missing-default",
        ),
        pytest.param(
            MINIMAL.split("[adapters.echo]")[0],
            ["[adapters.echo]"],
            id="missing-adapter",
        ),
        pytest.param(
            MINIMAL + '\n[adapters.gpt]\ndefault = "gpt-9"\nmodels = {}\n',
            ["unknown adapter 'gpt'", "claude, gemini, echo"],
            id="unknown-adapter",
        ),
        pytest.param(
            broken('aliases = ["flash"]', 'aliases = ["sonnet", "Flash", "flash"]'),
            ["adapters.gemini.models.gemini-2.5-flash", "'flash'", "once per adapter"],
            id="repeated-alias",
        ),
        pytest.param(
            broken('aliases = ["sonnet"]', 'aliases = ["Claude-Sonnet-4-6"]'),
            ["'Claude-Sonnet-4-6'", "adapters.claude.models.claude-sonnet-4-6"],
            id="alias-repeats-name",
        ),
        pytest.param(
            broken("[adapters.gemini]", "[adapters.gemini"),
            ["is not valid TOML", "line"],
            id="bad-toml",
        ),
    ],
)
def test_catalog_load_rejects_bad_content(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write_catalog(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        Catalog.load(str(path))

    message = str(caught.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message
    assert caught.value.name == "catalog"


def test_catalog_load_rejects_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    with pytest.raises(ConfigError) as caught:
        Catalog.load(str(path))

    assert f"model catalog {path} cannot be read" in str(caught.value)
