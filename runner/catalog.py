"""The model catalog: the models each adapter may run, their aliases and prices.

The catalog ships as `runner/catalog.toml`. `Catalog.load(path)` reads another
file of the same shape, and the setting `catalog_path`
(`SUPERPOOL_CATALOG_PATH`) makes runners use one. Each adapter has a table with
its default model and one table per model:

    [adapters.claude]
    default = "claude-sonnet-4-6"

    [adapters.claude.models."claude-sonnet-4-6"]
    aliases = ["sonnet"]
    input_usd_per_mtok = 3.00
    output_usd_per_mtok = 15.00
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from bus.errors import ConfigError, InvalidRequestError
from bus.settings import Settings
from bus.wire import ADAPTERS, AUTO_ADAPTER, RunResult, Usage

SHIPPED_CATALOG = "catalog.toml"
# Adapters with models; "auto" has none, because it routes to one of these.
MODEL_ADAPTERS = tuple(name for name in ADAPTERS if name != AUTO_ADAPTER)
# The echo adapter reads delay and failure options from model_hint, not a model.
ECHO_ADAPTER = "echo"
# Prices in the catalog are per million tokens.
TOKENS_PER_PRICE_UNIT = 1_000_000

_T = TypeVar("_T")
Price = Annotated[float, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(min_length=1)]


class _ModelTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    input_usd_per_mtok: Price
    output_usd_per_mtok: Price
    aliases: tuple[Name, ...] = ()


# Adapter and model tables are converted one at a time, because msgspec's error
# paths show a dict key as `[...]` and would hide the adapter and model name.
class _AdapterTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    default: Name
    models: dict[Name, Any]


class _CatalogFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    adapters: dict[str, Any]


@dataclass(frozen=True)
class Model:
    """A catalog entry: a model of one adapter, its aliases and its prices."""

    adapter: str
    name: str
    aliases: tuple[str, ...]
    input_usd_per_mtok: float
    output_usd_per_mtok: float

    def cost(self, usage: Usage) -> float:
        """Return the price of `usage` in USD."""
        # One division at the end keeps results such as 0.0105 exact.
        total = (
            usage.input_tokens * self.input_usd_per_mtok
            + usage.output_tokens * self.output_usd_per_mtok
        )
        return total / TOKENS_PER_PRICE_UNIT


class Catalog:
    """The models of every adapter, looked up by name or alias.

    Lookups ignore case and surrounding spaces.
    """

    def __init__(self, models: Iterable[Model], defaults: Mapping[str, str]) -> None:
        """Index `models` by adapter, with `defaults` naming each default model."""
        self._defaults = dict(defaults)
        self._models: dict[str, list[Model]] = {name: [] for name in self._defaults}
        self._index: dict[str, dict[str, Model]] = {name: {} for name in self._defaults}
        for model in models:
            self._models[model.adapter].append(model)
            for key in (model.name, *model.aliases):
                self._index[model.adapter][_key(key)] = model

    @classmethod
    def load(cls, path: str | Path | None = None) -> Catalog:
        """Read and validate a catalog file, by default the one shipped with runner.

        Raises:
            ConfigError: the file cannot be read, is not TOML, or breaks a rule.
                The message names the file, the adapter and the field.
        """
        source, data = _read(path)
        catalog_file = _convert(source, data, _CatalogFile, "")
        _check_adapters(source, catalog_file.adapters)
        models: list[Model] = []
        defaults: dict[str, str] = {}
        for adapter, raw_table in catalog_file.adapters.items():
            where = f"adapters.{adapter}"
            table = _convert(source, raw_table, _AdapterTable, where)
            entries = {
                name: _convert(source, raw_model, _ModelTable, f"{where}.models.{name}")
                for name, raw_model in table.models.items()
            }
            _check_adapter_table(source, adapter, table.default, entries)
            models.extend(_models_of(adapter, entries))
            defaults[adapter] = table.default
        return cls(models, defaults)

    @property
    def adapters(self) -> tuple[str, ...]:
        return tuple(self._defaults)

    def default_model(self, adapter: str) -> str:
        """Return the name of `adapter`'s default model.

        Raises:
            InvalidRequestError: the catalog has no entry for `adapter`.
        """
        self._check_adapter(adapter)
        return self._defaults[adapter]

    def models(self, adapter: str) -> tuple[Model, ...]:
        """Return `adapter`'s models in catalog order."""
        self._check_adapter(adapter)
        return tuple(self._models[adapter])

    def find(self, adapter: str, name: str) -> Model | None:
        """Return `adapter`'s model called `name` or with alias `name`, if any."""
        self._check_adapter(adapter)
        return self._index[adapter].get(_key(name))

    def resolve(
        self, adapter: str, model_hint: str | None
    ) -> tuple[str, tuple[str, ...]]:
        """Pick the model for a run, with a note when the hint was not used.

        An empty hint gives the default model. A hint that is no name or alias
        of `adapter`'s models also gives the default, with a note naming the
        hint. The echo adapter always gets its default, because its hint
        carries echo options such as "delay=2".

        Returns:
            The model name and the notes for the caller.

        Raises:
            InvalidRequestError: the catalog has no entry for `adapter`.
        """
        default = self.default_model(adapter)
        hint = (model_hint or "").strip()
        if adapter == ECHO_ADAPTER or not hint:
            return default, ()
        model = self.find(adapter, hint)
        if model is not None:
            return model.name, ()
        return default, (self._unused_hint_note(adapter, hint, default),)

    def cheapest(self, adapter: str) -> Model:
        """Return `adapter`'s model with the lowest input plus output price.

        Of models with the same price, the first in the catalog wins.
        """
        return min(
            self.models(adapter),
            key=lambda model: model.input_usd_per_mtok + model.output_usd_per_mtok,
        )

    def price(self, adapter: str, model: str) -> Model | None:
        """Return the entry that prices `model`, allowing dated snapshot names.

        Providers may return a snapshot name such as
        "claude-sonnet-4-6-20250929", which is priced as the longest catalog
        name that it extends with "-".
        """
        entry = self.find(adapter, model)
        if entry is not None:
            return entry
        key = _key(model)
        extended = [
            candidate
            for candidate in self._models[adapter]
            if key.startswith(_key(candidate.name) + "-")
        ]
        return max(extended, key=lambda candidate: len(candidate.name), default=None)

    def cost(self, adapter: str, model: str, usage: Usage) -> float:
        """Return the price in USD of `usage` on `adapter`'s `model`.

        Raises:
            ConfigError: the catalog has no price for `model`.
            InvalidRequestError: the catalog has no entry for `adapter`.
        """
        entry = self.price(adapter, model)
        if entry is None:
            known = ", ".join(candidate.name for candidate in self._models[adapter])
            raise ConfigError(
                "catalog",
                f"model {model!r} of adapter {adapter} has no price in the model "
                f"catalog (known models: {known}). Add it with its prices.",
            )
        return entry.cost(usage)

    def _check_adapter(self, adapter: str) -> None:
        if adapter not in self._defaults:
            raise InvalidRequestError(
                f"adapter {adapter!r} is not in the model catalog: use one of "
                f"{', '.join(self._defaults)}",
                field="adapter",
            )

    def _unused_hint_note(self, adapter: str, hint: str, default: str) -> str:
        for other in self._defaults:
            if other != adapter and _key(hint) in self._index[other]:
                return (
                    f"model_hint {hint!r} is a model of adapter {other}, not "
                    f"{adapter}; used {default}"
                )
        return (
            f"model_hint {hint!r} is not in the catalog for adapter {adapter}; "
            f"used {default}"
        )


def with_cost(
    catalog: Catalog, result: RunResult, usage: Usage, provider_model: str = ""
) -> RunResult:
    """Return `result` with `usage` and its price in USD.

    The model the provider reported, such as a dated snapshot, is priced when
    the catalog lists it; otherwise the run is priced as `result.model` and a
    note says so.

    Raises:
        ConfigError: the catalog has no price for `result.model` either.
    """
    model = provider_model or result.model
    notes = result.notes
    try:
        cost = catalog.cost(result.adapter, model, usage)
    except ConfigError:
        cost = catalog.cost(result.adapter, result.model, usage)
        notes += (f"priced as {result.model}: the catalog has no price for {model}",)
    return msgspec.structs.replace(
        result, model=model, usage=usage, cost_usd=cost, notes=notes
    )


def catalog_for(settings: Settings, loaded: Catalog) -> Catalog:
    """Return the catalog that `settings.catalog_path` names, else `loaded`.

    Each file is read once per process.

    Raises:
        ConfigError: the file cannot be read or is invalid.
    """
    if not settings.catalog_path:
        return loaded
    return _load_cached(settings.catalog_path)


@functools.cache
def _load_cached(path: str) -> Catalog:
    return Catalog.load(path)


def _key(name: str) -> str:
    return name.strip().casefold()


def _read(path: str | Path | None) -> tuple[str, Any]:
    """Return the file's name for messages and its parsed TOML."""
    # Not importlib.resources: on Python 3.11 it raises NotADirectoryError for
    # `runner` as a namespace package in an editable install.
    file = Path(__file__).with_name(SHIPPED_CATALOG) if path is None else Path(path)
    source = str(file)
    try:
        return source, tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        message = f"model catalog {source} cannot be read: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        message = f"model catalog {source} is not UTF-8 text: {exc}"
    except tomllib.TOMLDecodeError as exc:
        message = f"model catalog {source} is not valid TOML: {exc}"
    raise ConfigError("catalog", message)


def _convert(source: str, value: Any, type_: type[_T], where: str) -> _T:
    """Convert one table, naming `where` it sits in the file on failure."""
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        detail = _rebase_path(str(exc), where)
        message = f"model catalog {source} is invalid: {detail}"
        raise ConfigError("catalog", message) from None


def _rebase_path(message: str, where: str) -> str:
    """Replace msgspec's root `$` in `message` with the table's dotted path."""
    if "- at `$" not in message:
        # msgspec names no path for an error in the root object itself.
        return f"{message} - at `{where}`" if where else message
    prefix = f"{where}." if where else ""
    return message.replace("`$.", f"`{prefix}").replace("`$`", f"`{where or '$'}`")


def _check_adapters(source: str, adapters: Mapping[str, Any]) -> None:
    unknown = sorted(set(adapters) - set(MODEL_ADAPTERS))
    if unknown:
        raise ConfigError(
            "catalog",
            f"model catalog {source} has an entry for unknown adapter {unknown[0]!r}: "
            f"use one of {', '.join(MODEL_ADAPTERS)}",
        )
    for adapter in MODEL_ADAPTERS:
        if adapter not in adapters:
            raise ConfigError(
                "catalog",
                f"model catalog {source} has no [adapters.{adapter}] table. Add one "
                "with a default and at least one model.",
            )


def _check_adapter_table(
    source: str, adapter: str, default: str, models: Mapping[str, _ModelTable]
) -> None:
    if default not in models:
        known = ", ".join(models) or "none"
        raise ConfigError(
            "catalog",
            f"model catalog {source}: adapters.{adapter}.default {default!r} "
            f"is not among the adapter's models (models: {known})",
        )
    owners: dict[str, str] = {}
    for name, model in models.items():
        for key in (name, *model.aliases):
            owner = owners.get(_key(key))
            if owner is not None:
                raise ConfigError(
                    "catalog",
                    f"model catalog {source}: adapters.{adapter}.models.{name} uses "
                    f"name or alias {key!r}, which is already a name or alias of "
                    f"{owner}. Give each name and alias only once per adapter.",
                )
            owners[_key(key)] = name


def _models_of(adapter: str, models: Mapping[str, _ModelTable]) -> list[Model]:
    return [
        Model(
            adapter=adapter,
            name=name,
            aliases=entry.aliases,
            input_usd_per_mtok=entry.input_usd_per_mtok,
            output_usd_per_mtok=entry.output_usd_per_mtok,
        )
        for name, entry in models.items()
    ]
