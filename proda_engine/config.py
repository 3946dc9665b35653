"""One config layer for every run: frozen pydantic models, YAML/JSON files, readable errors, CLI flags.

Every run configuration (:class:`~proda_engine.learning.config.TrainConfig`,
:class:`~proda_engine.inference.config.AssimilateConfig`, :class:`~proda_engine.inference.mcmc.MCMCConfig`,
:class:`~proda_engine.scenario_api.ScenarioConfig`) subclasses :class:`RunConfig`: unknown keys are refused
by name, values are checked by their types (``Literal`` choices, ``ge``/``gt`` constraints), an instance
cannot be changed (:meth:`RunConfig.replace` returns a validated copy), and the validated config is
written with the run (:meth:`RunConfig.save`, or ``RunFolder.write_config(cfg.to_dict())``) so that
loading it back reproduces the run's settings. :func:`add_config_arguments` derives ``argparse`` flags
from a model's fields and :func:`config_from_args` builds the model from the parsed flags.

Errors are :class:`ConfigError` (a ``ValueError``) naming the file, the key, what was expected and what
was found, e.g. ``run.yml: assimilate config: key 'weights': expected one of ['rank', 'depth_exp'],
found 'linear'``.

Example
-------
>>> from typing import Literal
>>> class Demo(RunConfig):
...     label: ClassVar[str] = "demo config"
...     mode: Literal["fast", "exact"] = Field("fast", description="how to run")
...     n: PositiveInt = Field(3, description="how many")
>>> Demo.from_dict({"n": 5}).n
5
>>> Demo.from_dict({"mode": "slow"})
Traceback (most recent call last):
...
proda_engine.config.ConfigError: demo config: key 'mode': expected one of ['fast', 'exact'], found 'slow'
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

__all__ = [
    "ConfigError",
    "Expect",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PathStr",
    "PositiveFloat",
    "PositiveInt",
    "RunConfig",
    "add_config_arguments",
    "config_from_args",
    "format_validation_error",
    "literal_choices",
]


class ConfigError(ValueError):
    """A run configuration is invalid: the message names the file (if any), the key, the expected
    value and the value found."""


@dataclass(frozen=True)
class Expect:
    """Annotation marker: how an error message describes the values a field accepts
    (``Annotated[int, Field(ge=1), Expect("a positive integer")]``)."""

    text: str


def _fspath(value: Any) -> Any:
    # Paths are stored as strings: the config is written to YAML/JSON and compared after a round trip.
    return os.fspath(value) if isinstance(value, PathLike) else value


PositiveInt = Annotated[int, Field(ge=1), Expect("a positive integer")]
NonNegativeInt = Annotated[int, Field(ge=0), Expect("an integer >= 0")]
PositiveFloat = Annotated[float, Field(gt=0), Expect("a number > 0")]
NonNegativeFloat = Annotated[float, Field(ge=0), Expect("a number >= 0")]
#: A file or folder path, stored as a string (``pathlib.Path`` values are accepted).
PathStr = Annotated[str, BeforeValidator(_fspath)]


# ----------------------------------------------------------------------------------------------
# error messages
# ----------------------------------------------------------------------------------------------
def literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values of the ``Literal`` inside ``annotation`` (through ``Annotated`` and ``| None``), or None.

    >>> literal_choices(Literal["a", "b"] | None)
    ('a', 'b')
    """
    origin = get_origin(annotation)
    if origin is Literal:
        return get_args(annotation)
    if origin is Annotated:
        return literal_choices(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(annotation):
            found = literal_choices(arg)
            if found is not None:
                return found
    return None


def _expect_marker(info: FieldInfo) -> str | None:
    """The field's :class:`Expect` text, on the field or inside its annotation (``PositiveFloat | None``)."""
    for meta in info.metadata:
        if isinstance(meta, Expect):
            return meta.text
    return _find_expect(info.annotation)


def _find_expect(annotation: Any) -> str | None:
    if get_origin(annotation) is Annotated:
        found = [m.text for m in get_args(annotation)[1:] if isinstance(m, Expect)]
        return found[0] if found else _find_expect(get_args(annotation)[0])
    if get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in get_args(annotation):
            found = _find_expect(arg)
            if found:
                return found
    return None


_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "list_type": "a list", "tuple_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "none_required": "null",
}


def _expected(err: Mapping[str, Any], info: FieldInfo | None) -> str:
    """What the field at ``err['loc']`` accepts, in words (``"one of ['a', 'b']"``, ``"> 0"``...)."""
    if info is not None and len(err["loc"]) == 1:
        marked = _expect_marker(info)
        if marked:
            return marked
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "literal_error":
        choices = literal_choices(info.annotation) if info is not None and len(err["loc"]) == 1 else None
        return f"one of {list(choices)}" if choices else f"one of {ctx.get('expected')}"
    bounds = {"greater_than": ("> ", "gt"), "greater_than_equal": (">= ", "ge"),
              "less_than": ("< ", "lt"), "less_than_equal": ("<= ", "le")}
    if kind in bounds:
        sign, key = bounds[kind]
        return f"{sign}{ctx.get(key)}"
    if kind == "too_short":
        return f"at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"at most {ctx.get('max_length')} item(s)"
    return _TYPE_WORDS.get(kind, str(err.get("msg", kind)))


def _loc_text(loc: tuple[Any, ...]) -> str:
    """``('hidden', 1)`` -> ``hidden[1]``; ``('mcmc', 'n_test')`` -> ``mcmc.n_test``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unknown_message(model: type[RunConfig], keys: list[str]) -> str:
    names = list(model.model_fields)
    described = []
    for k in keys:
        close = difflib.get_close_matches(k, names, n=1)
        described.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return model.unknown_template.format(label=model.label, unknown=sorted(keys), keys=", ".join(described),
                                         valid=", ".join(names))


def format_validation_error(model: type[RunConfig], exc: ValidationError, source: str | None = None) -> str:
    """One readable line per problem, prefixed by ``source`` (a file name) when given: unknown keys are
    named (with the closest valid key), bad values say the key, what was expected and what was found."""
    fields = model.model_fields
    unknown = [_loc_text(e["loc"]) for e in exc.errors() if e["type"] == "extra_forbidden"]
    lines = [_unknown_message(model, unknown)] if unknown else []
    for err in exc.errors():
        if err["type"] == "extra_forbidden":
            continue
        if err["type"] in ("value_error", "assertion_error"):
            # raised by the model's own checks, already phrased with the key(s)
            msg = str(err.get("ctx", {}).get("error", err["msg"]))
            lines.append(msg)
            continue
        loc = tuple(err["loc"])
        info = fields.get(loc[0]) if loc and isinstance(loc[0], str) else None
        lines.append(model.value_template.format(label=model.label, key=_loc_text(loc),
                                                 expected=_expected(err, info), found=err.get("input")))
    text = "; ".join(dict.fromkeys(lines)) or str(exc)
    return f"{source}: {text}" if source else text


# ----------------------------------------------------------------------------------------------
# the base model
# ----------------------------------------------------------------------------------------------
class RunConfig(BaseModel):
    """Base of every run configuration: unknown keys refused, frozen, strict scalar types (``1.5`` is not
    an integer, ``"3"`` is not a number), list-valued fields accept YAML lists.

    Subclasses set :attr:`label` (how messages name the config) and may change the message templates
    (``{label} {key} {expected} {found}``; unknown keys: ``{label} {unknown} {keys} {valid}``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)

    label: ClassVar[str] = "config"
    value_template: ClassVar[str] = "{label}: key {key!r}: expected {expected}, found {found!r}"
    unknown_template: ClassVar[str] = "{label}: unknown key {keys}; allowed keys: {valid}"

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(type(self), exc)) from None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None = None, *, source: str | None = None, **overrides: Any
                  ) -> Self:
        """Build from a mapping (a parsed YAML file) and keyword overrides; every error is a
        :class:`ConfigError` naming ``source`` (a file), the key, expected and found."""
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"{source or cls.label}: expected a mapping of settings, found {type(data).__name__}")
        merged = {**(data or {}), **overrides}
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(cls, exc, source)) from None

    @classmethod
    def from_yaml(cls, path: str | PathLike[str]) -> Self:
        """Read and validate a YAML (or JSON) file; errors name the file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"{cls.label}: file {p} not found") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: cannot be parsed as YAML ({exc})") from exc
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"{p}: expected a mapping of settings, found {type(raw).__name__}")
        try:
            return cls.from_dict(cls._unwrap(raw or {}))
        except ValueError as exc:
            raise ConfigError(f"{p}: {exc}") from None

    @classmethod
    def _unwrap(cls, raw: Mapping[str, Any]) -> Mapping[str, Any]:
        """Hook: the mapping of settings inside a parsed file (e.g. a top-level section)."""
        return raw

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` (the config itself is frozen)."""
        return type(self).from_dict(self.to_dict() | changes)

    # ---- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-serialisable mapping (lists, not tuples); :meth:`from_dict` rebuilds an equal
        config from it."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The YAML text written next to a run's products (keys in field order)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, default_flow_style=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def save(self, path: str | PathLike[str]) -> Path:
        """Write :meth:`to_yaml` to ``path`` atomically; :meth:`from_yaml` reads it back equal."""
        from proda_engine.data.writers import write_text_atomic

        return Path(write_text_atomic(self.to_yaml(), path))


# ----------------------------------------------------------------------------------------------
# command-line flags derived from the models
# ----------------------------------------------------------------------------------------------
_NONE_WORDS = ("none", "null")


def _optional(parse: type) -> Any:
    """An argparse ``type`` for an optional field: ``none``/``null`` gives None."""
    def convert(text: str) -> Any:
        return None if text.lower() in _NONE_WORDS else parse(text)

    convert.__name__ = parse.__name__  # argparse names the type in its error message
    return convert


def _strip(annotation: Any) -> tuple[Any, bool]:
    """(annotation without ``Annotated`` and ``None``, whether None is allowed)."""
    if get_origin(annotation) is Annotated:
        return _strip(get_args(annotation)[0])
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        # str | list[str]: a flag takes one or more values (the model accepts either)
        seqs = [a for a in args if get_origin(_strip(a)[0]) in (list, tuple)]
        inner = seqs[0] if seqs else args[0]
        inner, opt = _strip(inner)
        return inner, optional or opt
    return annotation, False


def _argparse_kwargs(name: str, info: FieldInfo, show_default: bool = True) -> dict[str, Any]:
    """``add_argument`` keywords for one field: type, choices, nargs, help (default SUPPRESS: a flag
    not given leaves the field to the config file or the model default)."""
    base, optional = _strip(info.annotation)
    described = (info.description or name).replace("%", "%%")
    if show_default and "default" not in described.lower():  # else the description says it
        described += f" (default: {info.get_default(call_default_factory=True)!r})"
    kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": described}
    choices = literal_choices(info.annotation)
    origin = get_origin(base)
    if choices is not None:
        kw.update(choices=list(choices), type=type(choices[0]))
    elif base is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif base in (int, float, str):
        kw["type"] = _optional(base) if optional else base
    elif origin in (list, tuple):
        args = [a for a in get_args(base) if a is not Ellipsis]
        elem, _ = _strip(args[0]) if args else (str, False)
        if elem not in (int, float, str):
            raise TypeError(f"{name}: no command-line form for a list of {elem!r}")
        fixed = origin is tuple and Ellipsis not in get_args(base)
        kw.update(type=elem, nargs=len(args) if fixed else "+")
    else:
        raise TypeError(f"field {name!r} ({info.annotation!r}) has no command-line form; exclude it")
    return kw


def add_config_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, model: type[RunConfig], *,
                         exclude: Iterable[str] = (), rename: Mapping[str, str] | None = None,
                         overrides: Mapping[str, Mapping[str, Any]] | None = None,
                         show_defaults: bool = True) -> list[str]:
    """Add one ``--flag`` per field of ``model`` (``max_epochs`` -> ``--max-epochs``; ``rename`` maps a
    field to another flag name), with the field's type, ``Literal`` choices, description as help and
    ``--x/--no-x`` for booleans. ``overrides`` change a flag's ``add_argument`` keywords (e.g. ``nargs``).
    The destination is the field name; flags not given are absent from the parsed namespace.
    ``show_defaults=False`` leaves the model defaults out of the help (when the command starts from
    other defaults, e.g. a config file).

    Returns:
        the field names given flags (what :func:`config_from_args` reads).
    """
    rename = dict(rename or {})
    overrides = dict(overrides or {})
    skip = set(exclude)
    unknown = (skip | set(rename) | set(overrides)) - set(model.model_fields)
    if unknown:
        raise KeyError(f"{model.__name__} has no field(s) {sorted(unknown)}")
    added = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + rename.get(name, name).replace("_", "-")
        kw = _argparse_kwargs(name, info, show_defaults)
        if "choices" not in kw and "action" not in kw:
            kw["metavar"] = flag[2:].replace("-", "_").upper()
        kw |= dict(overrides.get(name, {}))
        parser.add_argument(flag, dest=name, **kw)
        added.append(name)
    return added


def config_from_args(model: type[RunConfig], args: argparse.Namespace, base: RunConfig | None = None, *,
                     exclude: Iterable[str] = ()) -> RunConfig:
    """The validated config: ``base`` (a config file, or the model defaults when None) with every field
    flag of :func:`add_config_arguments` given on the command line (flags not given are absent from
    ``args``); ``exclude`` names fields whose flags the command handles itself."""
    skip = set(exclude)
    given = {name: getattr(args, name) for name in model.model_fields if name not in skip and hasattr(args, name)}
    if base is None:
        return model.from_dict(given)
    if not isinstance(base, model):
        raise TypeError(f"base must be a {model.__name__}, found {type(base).__name__}")
    return base.replace(**given) if given else base
