"""Cost routing: the adapter and model for each run, `adapter="auto"` included.

A run with `adapter="auto"` gets the adapter and model of the first routing
rule whose task pattern matches its task label, or of the default rule when
none matches. The rules ship as `runner/routing.toml`; the setting
`routing_path` (`SUPERPOOL_ROUTING_PATH`) names another file of the same
shape:

    [[rules]]
    name = "summaries"
    tasks = ["summar*", "*summary*"]
    adapter = "gemini"
    cheapest = true

    [default]
    adapter = "claude"

Patterns are shell globs (`fnmatch`), compared without regard to case. A rule
names a `model`, or sets `cheapest = true` for the adapter's cheapest model in
the catalog, or leaves both out for the adapter's default model. Routing
happens in the runner, so requests published straight to the bus get it too.
"""

from __future__ import annotations

import fnmatch
import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec

from bus.errors import ConfigError
from bus.settings import Settings
from bus.wire import AUTO_ADAPTER, RunRequest
from runner.catalog import Catalog

SHIPPED_RULES = "routing.toml"
DEFAULT_RULE_NAME = "default"
Name = Annotated[str, msgspec.Meta(min_length=1)]


class _RuleTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    adapter: Name
    name: str = ""
    tasks: tuple[Name, ...] = ()
    model: str = ""
    cheapest: bool = False


class _RoutingFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    default: _RuleTable
    rules: tuple[_RuleTable, ...] = ()


@dataclass(frozen=True)
class Rule:
    """One routing rule: task patterns and the adapter and model they pick."""

    name: str
    patterns: tuple[str, ...]
    adapter: str
    model: str = ""
    cheapest: bool = False

    def match(self, task: str) -> str | None:
        """Return the first pattern that matches `task`, ignoring case."""
        key = task.casefold()
        for pattern in self.patterns:
            if fnmatch.fnmatchcase(key, pattern.casefold()):
                return pattern
        return None

    def pick_model(self, catalog: Catalog) -> str:
        """Return the model this rule names, resolved in `catalog`.

        Raises:
            ConfigError: the rule names an adapter or model the catalog lacks.
        """
        if self.adapter not in catalog.adapters:
            raise ConfigError(
                "routing",
                f"routing rule {self.name!r} names adapter {self.adapter!r}, which "
                f"the model catalog lacks; use one of {', '.join(catalog.adapters)}",
            )
        if self.cheapest:
            return catalog.cheapest(self.adapter).name
        if not self.model:
            return catalog.default_model(self.adapter)
        model = catalog.find(self.adapter, self.model)
        if model is None:
            raise ConfigError(
                "routing",
                f"routing rule {self.name!r} names model {self.model!r}, which the "
                f"model catalog does not list for adapter {self.adapter}",
            )
        return model.name


@dataclass(frozen=True)
class Route:
    """The adapter and model chosen for one run, with notes for the caller."""

    adapter: str
    model: str
    notes: tuple[str, ...] = ()


class RoutingRules:
    """Ordered routing rules and the default rule."""

    def __init__(self, rules: tuple[Rule, ...], default: Rule) -> None:
        self.rules = rules
        self.default = default

    @classmethod
    def load(cls, path: str | Path | None = None) -> RoutingRules:
        """Read and validate a rules file, by default the one shipped with runner.

        Raises:
            ConfigError: the file cannot be read, is not TOML, or breaks a rule.
        """
        file = Path(__file__).with_name(SHIPPED_RULES) if path is None else Path(path)
        data = _read(file)
        try:
            parsed = msgspec.convert(data, _RoutingFile)
        except msgspec.ValidationError as exc:
            raise ConfigError(
                "routing", f"routing rules {file} are invalid: {exc}"
            ) from None
        rules = tuple(
            _rule(file, table, f"rule {index + 1}")
            for index, table in enumerate(parsed.rules)
        )
        default = _rule(file, parsed.default, DEFAULT_RULE_NAME)
        return cls(rules, default)

    def choose(self, task: str) -> tuple[Rule, str | None]:
        """Return the first rule that matches `task` and its pattern, or the default."""
        for rule in self.rules:
            pattern = rule.match(task)
            if pattern is not None:
                return rule, pattern
        return self.default, None


def resolve_route(settings: Settings, catalog: Catalog, request: RunRequest) -> Route:
    """Pick the adapter and model for `request`.

    A named adapter keeps its name, and the catalog resolves `model_hint`. For
    "auto" the routing rules pick both; a `model_hint` naming a model of the
    chosen adapter then replaces the rule's model. The notes name the rule that
    chose, and why a hint was not used.

    Raises:
        ConfigError: the routing rules are invalid or name what the catalog lacks.
        InvalidRequestError: the catalog has no entry for the adapter.
    """
    if request.adapter != AUTO_ADAPTER:
        model, notes = catalog.resolve(request.adapter, request.model_hint)
        return Route(request.adapter, model, notes)
    rule, pattern = rules_for(settings).choose(request.task)
    model = rule.pick_model(catalog)
    matched = f"task pattern {pattern!r}" if pattern else "no task pattern matched"
    notes = (
        f"adapter auto: rule {rule.name!r} ({matched}) chose {rule.adapter}/{model}",
    )
    hint = (request.model_hint or "").strip()
    if hint:
        hinted = catalog.find(rule.adapter, hint)
        if hinted is not None:
            model = hinted.name
            notes += (f"model_hint {hint!r} replaced the rule's model: used {model}",)
        else:
            notes += (
                f"model_hint {hint!r} is not a model of adapter {rule.adapter}; "
                f"used {model}",
            )
    return Route(rule.adapter, model, notes)


def rules_for(settings: Settings) -> RoutingRules:
    """Return the rules of `settings.routing_path`, or the shipped rules.

    Each file is read once per process.
    """
    return _load_cached(settings.routing_path or None)


@functools.cache
def _load_cached(path: str | None) -> RoutingRules:
    return RoutingRules.load(path)


def _read(file: Path) -> Any:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        message = f"routing rules {file} cannot be read: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        message = f"routing rules {file} are not UTF-8 text: {exc}"
    except tomllib.TOMLDecodeError as exc:
        message = f"routing rules {file} are not valid TOML: {exc}"
    raise ConfigError("routing", message)


def _rule(file: Path, table: _RuleTable, fallback_name: str) -> Rule:
    name = table.name or fallback_name
    if table.model and table.cheapest:
        raise ConfigError(
            "routing",
            f"routing rules {file}: rule {name!r} sets both model and cheapest; "
            "keep one",
        )
    if fallback_name != DEFAULT_RULE_NAME and not table.tasks:
        raise ConfigError(
            "routing",
            f"routing rules {file}: rule {name!r} has no task patterns; add "
            'tasks = ["pattern*"]',
        )
    if table.adapter == AUTO_ADAPTER:
        raise ConfigError(
            "routing",
            f"routing rules {file}: rule {name!r} routes to adapter 'auto'; name "
            "an adapter with models",
        )
    return Rule(name, table.tasks, table.adapter, table.model, table.cheapest)
