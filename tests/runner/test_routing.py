"""Cost routing for adapter "auto", and the catalog_path setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.settings import Settings
from bus.wire import RunRequest
from runner.catalog import Catalog, catalog_for
from runner.routing import RoutingRules, resolve_route

CHEAP = ("gemini", "gemini-2.5-flash-lite")
DEFAULT = ("claude", "claude-sonnet-4-6")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def route(
    catalog: Catalog,
    task: str,
    *,
    adapter: str = "auto",
    hint: str | None = None,
    settings: Settings | None = None,
) -> tuple[str, str, tuple[str, ...]]:
    request = RunRequest(task=task, prompt_text="x", adapter=adapter, model_hint=hint)
    chosen = resolve_route(settings or Settings(), catalog, request)
    return chosen.adapter, chosen.model, chosen.notes


@pytest.mark.parametrize(
    ("task", "expected", "rule"),
    [
        ("summarize-doc", CHEAP, "summaries"),
        ("Summary", CHEAP, "summaries"),
        ("weekly-summary-email", CHEAP, "summaries"),
        ("nginx-log-triage", CHEAP, "log analysis"),
        ("extract-invoice", CHEAP, "extraction"),
        ("validate-manifest", CHEAP, "config validation"),
        ("yaml-lint", CHEAP, "config validation"),
        ("k8s-config-check", CHEAP, "config validation"),
        ("dependency-audit", DEFAULT, "default"),
        ("code-review", DEFAULT, "default"),
    ],
)
def test_shipped_rules(
    catalog: Catalog, task: str, expected: tuple[str, str], rule: str
) -> None:
    adapter, model, notes = route(catalog, task)

    assert (adapter, model) == expected
    assert f"rule {rule!r}" in notes[0]
    assert f"chose {adapter}/{model}" in notes[0]


def test_named_adapter_not_routed(catalog: Catalog) -> None:
    assert route(catalog, "summarize-doc", adapter="claude") == (*DEFAULT, ())


def test_auto_hint_of_chosen_adapter_wins(catalog: Catalog) -> None:
    adapter, model, notes = route(catalog, "summarize", hint="pro")

    assert (adapter, model) == ("gemini", "gemini-2.5-pro")
    assert notes[1] == "model_hint 'pro' replaced the rule's model: used gemini-2.5-pro"


def test_auto_hint_of_other_adapter_noted(catalog: Catalog) -> None:
    adapter, model, notes = route(catalog, "summarize", hint="opus")

    assert (adapter, model) == CHEAP
    assert notes[1] == (
        "model_hint 'opus' is not a model of adapter gemini; used gemini-2.5-flash-lite"
    )


def test_cheapest_uses_catalog_prices(catalog: Catalog) -> None:
    assert catalog.cheapest("gemini").name == "gemini-2.5-flash-lite"
    assert catalog.cheapest("claude").name == "claude-haiku-4-5"


def write_rules(tmp_path: Path, text: str) -> str:
    path = tmp_path / "routing.toml"
    path.write_text(text)
    return str(path)


def test_routing_path_replaces_shipped(tmp_path: Path, catalog: Catalog) -> None:
    path = write_rules(
        tmp_path,
        """
[[rules]]
name = "reviews"
tasks = ["*review*"]
adapter = "claude"
model = "opus"

[default]
adapter = "echo"
""",
    )
    settings = Settings(routing_path=path)

    review = route(catalog, "code-review", settings=settings)
    other = route(catalog, "summarize-doc", settings=settings)

    assert review[:2] == ("claude", "claude-opus-4-6")
    assert other[:2] == ("echo", "echo")
    assert "rule 'default' (no task pattern matched)" in other[2][0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[rules]]\nadapter = 'gemini'\ntasks = ['x']\n", "invalid"),
        ("[default]\nadapter = 'auto'\n", "routes to adapter 'auto'"),
        (
            "[[rules]]\nadapter = 'gemini'\n[default]\nadapter = 'claude'\n",
            "has no task patterns",
        ),
        (
            "[default]\nadapter = 'claude'\nmodel = 'opus'\ncheapest = true\n",
            "sets both model and cheapest",
        ),
        ("[default\n", "not valid TOML"),
    ],
)
def test_routing_file_rejected(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RoutingRules.load(write_rules(tmp_path, text))

    assert expected in str(caught.value)
    assert str(tmp_path / "routing.toml") in str(caught.value)


def test_routing_unknown_model_fails_run(tmp_path: Path, catalog: Catalog) -> None:
    path = write_rules(tmp_path, "[default]\nadapter = 'claude'\nmodel = 'claude-9'\n")

    with pytest.raises(ConfigError) as caught:
        route(catalog, "x", settings=Settings(routing_path=path))

    assert "names model 'claude-9'" in str(caught.value)


def test_routing_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        RoutingRules.load(tmp_path / "nope.toml")

    assert "cannot be read" in str(caught.value)


def test_catalog_path_setting(tmp_path: Path, catalog: Catalog) -> None:
    text = (Path(__file__).parents[2] / "runner" / "catalog.toml").read_text()
    path = tmp_path / "catalog.toml"
    path.write_text(
        text.replace('default = "claude-sonnet-4-6"', 'default = "claude-opus-4-6"')
    )

    chosen = catalog_for(Settings(catalog_path=str(path)), catalog)

    assert chosen is not catalog
    assert chosen.default_model("claude") == "claude-opus-4-6"
    assert catalog_for(Settings(), catalog) is catalog
