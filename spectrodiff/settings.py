"""One settings system: each setting's name, type, default, range and help declared once, on a pydantic model.

The command line's options (`cli_parameters`), batch lines and configs (`Settings.from_dict`), the web API (FastAPI
takes the models themselves) and the studio's controls are made from the declarations, and every face words a bad
value alike ("--steps must be between 1 and 1000, got 5000"), naming the setting as that face does.

Light on purpose (pydantic, no torch): the command line reads these to build its options and its `--help`.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import reprlib
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, PydanticUndefined, core_schema

from .errors import SpectrodiffError

REQUIRED: Any = PydanticUndefined  # the default of a setting that has none (a FieldInfo's `default` is this)
# A value in an error message is cut to this many characters (a pasted novel stays out of the one line).
SHOWN_CHARS = 60
# The error type of a value the declaration refuses (range, text, choices, cross-field checks): its words are ours.
REFUSED = "spectrodiff"


def cli_flag(name: str) -> str:
    """The command line's name of a setting: `--sample-rate` for `sample_rate`."""
    return "--" + name.replace("_", "-")


_SURROGATE = re.compile("[\ud800-\udfff]")
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 60, 60


def quote_value(value: Any) -> str:
    """A value as an error quotes it: short whatever its size (reprlib stops early; the rest is cut)."""
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def number_words(value: float) -> str:
    """A number as a person writes it: 4294967295, 0.5, 240.0001, 600, 1e+308, "a 400-digit number" (a whole number
    too large for a float stays an int)."""
    if isinstance(value, int) and abs(value) >= 10**15:
        return f"a {len(str(abs(value)))}-digit number"
    # repr: the shortest text that reads back as the same float (240.0001, not "240" as :g rounds it).
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def refuse(words: str, sep: str = " ") -> typing.NoReturn:
    """Refuse a value inside validation, in our words; the one-line message puts the setting's name, then `sep`,
    before them (a cross-field check's words stand alone)."""
    raise PydanticCustomError(REFUSED, "{words}", {"words": words, "sep": sep})


@dataclass(frozen=True)
class Spec:
    """How one setting is checked and shown; pydantic applies it as the field's validator and JSON schema.

    Args:
        help: one line for `--help`, the API's docs and the studio.
        low, high: the inclusive range of a number (`above`: low itself excluded); `high` of text is its most
            characters, and text must not be empty where `low` is 1; `low` of a list is its fewest items.
        choices: the values a string may take.
        cli: how the command line takes it: None, `--name` from the field's name; "argument", positional; a
            declaration such as "--loop/--no-loop" or "-p/--prompt"; "" not on the command line (a face of its own).
        max_items: the most items a list may hold.
    """

    help: str
    low: float | None = None
    high: float | None = None
    above: bool = False
    choices: tuple[str, ...] = ()
    cli: str | None = None
    max_items: int | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable) -> core_schema.CoreSchema:
        def validate(value: Any, inner: Callable, info: core_schema.ValidationInfo) -> Any:
            context = info.context or {}
            high = context.get("highs", {}).get(info.field_name) if info.field_name else context.get("high")
            self._precheck(value, high, info.field_name or "items", listed)
            if isinstance(value, str) and base is Path or isinstance(value, list) and listed:
                value = Path(value) if base is Path else tuple(value)  # their JSON forms: text, a list
            value = inner(value)
            return value if value is None else self.checked(value, high)

        base = optional_kind(source) or source
        listed = typing.get_origin(base) is tuple
        return core_schema.with_info_wrap_validator_function(validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: Callable) -> dict:
        found = handler(schema)
        target = next((s for s in found.get("anyOf", []) if s.get("type") != "null"), found)  # X | None: X's
        kind = target.get("type")
        names = {"string": ("minLength", "maxLength"), "array": ("minItems", "maxItems")}.get(kind, (
            "exclusiveMinimum" if self.above else "minimum", "maximum"))
        for key, bound in zip(names, (self.low, self.max_items if kind == "array" else self.high), strict=True):
            if bound is not None and not (kind == "string" and key == "minLength"):
                target[key] = bound
        if self.choices:
            target["enum"] = list(self.choices)
        return found

    def _precheck(self, value: Any, high: float | None, name: str, listed: bool) -> None:
        """What must be refused before pydantic reads the value: a whole number beyond any float (it would become
        infinity, or 1e400 a confusing float), and lists by their length, before their items are read."""
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > sys.float_info.max:
            refuse(f"must be {range_words(self, high) or 'a number'}, got {number_words(value)}")
        if listed and value is not None:
            if not isinstance(value, list | tuple):
                refuse(f"must be a list, got {quote_value(value)}")
            most = min(self.max_items or sys.maxsize, int(high) if high is not None else sys.maxsize)
            if not (self.low or 0) <= len(value) <= most:
                refuse(f"give between {number_words(self.low or 0)} and {most} {name}, got {len(value)}", ": ")

    def checked(self, value: Any, high: float | None = None) -> Any:
        """`value` (of the field's type already) unless it breaks the declaration: refused in words."""
        high = self.high if high is None else min(high, self.high if self.high is not None else high)
        if isinstance(value, float) and not math.isfinite(value):
            refuse(f"is not a number, got {quote_value(value)}")
        if isinstance(value, str):
            if _SURROGATE.search(value):  # JSON's "\ud800": no tokenizer or file takes it
                refuse(f"is not valid text (a lone surrogate), got {quote_value(value)}")
            if self.low and not value.strip():
                refuse("is empty")
            if high is not None and len(value) > high:
                refuse(f"is {len(value)} characters; {range_words(self, high, text=True)}")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            low_ok = self.low is None or (value > self.low if self.above else value >= self.low)
            if not low_ok or (high is not None and value > high):
                refuse(f"must be {range_words(self, high)}, got {number_words(value)}")
        if self.choices and value not in self.choices:
            refuse(f"must be one of {', '.join(self.choices)}, got {quote_value(value)}")
        return value


def setting(default: Any = REQUIRED, help: str = "", *, low: float | None = None, high: float | None = None,
            above: bool = False, choices: tuple[str, ...] = (), cli: str | None = None,
            max_items: int | None = None) -> Any:
    """A setting of a Settings model: its default (REQUIRED: none), help, range, choices and command-line spelling,
    declared once. Paths and lists also take their JSON forms (text, a JSON list)."""
    info = Field(default, description=help)
    info.metadata.append(Spec(help, low, high, above, tuple(choices), cli, max_items))
    return info


def spec_of(field: FieldInfo) -> Spec:
    """A field's Spec (a field declared without `setting` has only its help)."""
    return next((m for m in field.metadata if isinstance(m, Spec)), None) or Spec(field.description or "")


def optional_kind(kind: Any) -> Any:
    """`X` for `X | None`, else None."""
    if isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind):
        return next(k for k in typing.get_args(kind) if k is not type(None))
    return None


def range_words(spec: Spec, high: float | None = None, text: bool = False) -> str:
    """A setting's range in words ("between 1 and 1000", "in (0, 600]", "at most 500 characters"), "" if none;
    `high` a tighter upper bound (a server's)."""
    high = spec.high if high is None else min(high, spec.high if spec.high is not None else high)
    if text:
        return f"at most {number_words(high)} characters" if high is not None else ""
    if spec.low is not None and high is not None:
        return f"in ({number_words(spec.low)}, {number_words(high)}]" if spec.above else \
            f"between {number_words(spec.low)} and {number_words(high)}"
    if spec.low is not None:
        return f"above {number_words(spec.low)}" if spec.above else f"at least {number_words(spec.low)}"
    return f"at most {number_words(high)}" if high is not None else ""


# ---- the models ----------------------------------------------------------------------------------------------------

class Settings(BaseModel):
    """A group of settings (a generation job, training options, spectrogram parameters): frozen, strict (no "5"
    for 5, no true for 1; a whole number serves as a number, text as a path), unknown fields refused. Built
    directly, from a mapping (`from_dict`) or by `replace`, a bad value is a one-line SpectrodiffError."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    # The settings that may come first, unnamed, in this order: Keyframe("church bells", seed=3).
    positional: ClassVar[tuple[str, ...]] = ()

    def __init__(self, /, *unnamed: Any, **values: Any) -> None:
        if len(unnamed) > len(self.positional):
            raise TypeError(f"{type(self).__name__} takes at most {len(self.positional)} settings unnamed "
                            f"({', '.join(self.positional) or 'none'}), got {len(unnamed)}")
        try:
            super().__init__(**dict(zip(self.positional, unnamed, strict=False)), **values)
        except ValidationError as exc:
            raise SpectrodiffError(error_line(exc, type(self))) from None

    # pydantic calls an overriding __init__ for every nested model it validates, where errors must stay pydantic's
    # (a request's are worded from them): marked as the base's, this one serves direct construction only.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def fields_in_order(cls) -> dict[str, FieldInfo]:
        """The settings by name, in the order the faces list them and a record writes them."""
        return dict(cls.model_fields)

    @classmethod
    def subject(cls) -> str:
        """What these settings are of, for "unknown field 'x' for generate" ("" says nothing)."""
        return ""

    @classmethod
    def field_names(cls) -> list[str]:
        """The names an "unknown field" error lists."""
        return list(cls.fields_in_order())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, flag: bool = False,
                  highs: Mapping[str, float] | None = None) -> typing.Self:
        """The settings a mapping holds (a batch line, an API request, a config, the command line's options):
        unknown fields are refused, missing ones take their defaults, every value is checked, against `highs` too
        where those are tighter (a server's). SpectrodiffError in one line, naming the setting as the command line
        does (`flag`) or by its name."""
        if not isinstance(data, Mapping):
            raise SpectrodiffError(f"settings are a mapping of {', '.join(cls.field_names())}, got "
                                   f"{quote_value(data)}")
        try:
            return cls.model_validate(dict(data), context={"highs": dict(highs or {})})
        except ValidationError as exc:
            raise SpectrodiffError(error_line(exc, cls, flag)) from None

    def replace(self, **changes: Any) -> typing.Self:
        """A copy with `changes`, checked as `from_dict` checks them (pydantic's model_copy does not): the settings
        given, changed; what the model worked out from them (a length from bars) is worked out again."""
        return type(self).from_dict({name: getattr(self, name) for name in self.model_fields_set} | changes)


# ---- errors in one line --------------------------------------------------------------------------------------------

# What a value of the wrong type should have been, by pydantic's error type.
TYPE_WORDS = {"int_type": "a whole number", "int_parsing": "a whole number", "int_from_float": "a whole number",
              "float_type": "a number", "float_parsing": "a number", "string_type": "text",
              "bool_type": "true or false", "bool_parsing": "true or false", "path_type": "a file path",
              "tuple_type": "a list", "list_type": "a list"}


def error_line(exc: ValidationError, model: type[Settings], flag: bool = False) -> str:
    """pydantic's errors as one line: the one a person would fix first (`first_error`), in our words."""
    return error_words(first_error(exc, model), model, flag)


def first_error(exc: ValidationError, model: type[Settings]) -> dict:
    """Of pydantic's errors, the one a person would fix first: an unknown field (the first by name), then a missing
    one, then the first bad value in the settings' order."""
    order = {name: n for n, name in enumerate(model.fields_in_order())}
    rank = {"extra_forbidden": 0, "missing": 1}

    def first(error: dict) -> tuple[int, int, str]:
        name = error["loc"][0] if error["loc"] else ""
        return rank.get(error["type"], 2), order.get(name, len(order)), str(name)

    return min(exc.errors(), key=first)


def error_words(error: Mapping[str, Any], model: type[Settings] | None = None, flag: bool = False) -> str:
    """One pydantic error in our words: "keyframe 2: strength must be in (0, 1], got 0". `model` (whose settings the
    error's location names) words unknown fields and the command line's labels (`flag`)."""
    where, label, owner = _place(error["loc"], model, flag)
    kind = error["type"]
    if kind == REFUSED:
        words = error["ctx"]["words"]
        line = f"{label}{error['ctx']['sep']}{words}" if label else words
    elif kind == "extra_forbidden":
        line = f"unknown field {quote_value(label)}"
        if owner is not None:
            subject = owner.subject() if owner is model else ""
            line += f"{' for ' + subject if subject else ''} (fields: {', '.join(owner.field_names())})"
    elif kind == "missing" or error.get("input", "") is None and (kind in TYPE_WORDS or kind == "is_instance_of"):
        line = f"{label} is required"
    elif kind == "string_unicode":
        line = f"{label} is not valid text (a lone surrogate), got {quote_value(error['input'])}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        item = _item_model(model, error["loc"])
        what = f"a {item.__name__.lower()} is a mapping of {', '.join(item.field_names())}" if item else \
            "must be a mapping"
        line = f"{label}: {what}, got {quote_value(error['input'])}"
    elif kind == "is_instance_of":
        wanted = "a file path" if error["ctx"]["class"] == "Path" else f"a {error['ctx']['class']}"
        line = f"{label} must be {wanted}, got {quote_value(error['input'])}"
    elif kind in TYPE_WORDS:
        line = f"{label} must be {TYPE_WORDS[kind]}, got {quote_value(error['input'])}"
    else:
        line = f"{label}: {error['msg']}"
    return f"{where}: {line}" if where else line


def _place(loc: tuple, model: type[Settings] | None, flag: bool) -> tuple[str, str, type[Settings] | None]:
    """Where an error's location is, as words: ("keyframe 2", "strength", the model holding it); a top-level
    setting is labelled as the command line names it where `flag`."""
    parts, owner = [], model
    for n, step in enumerate(loc):
        last = n == len(loc) - 1
        if isinstance(step, int):
            label = f"{str(loc[n - 1]).removesuffix('s')} {step + 1}" if n else str(step)
            if last:
                return ": ".join(parts[:-1]), label, owner
            parts[-1] = label
            continue
        if last:
            if flag and n == 0 and owner is not None and step in owner.model_fields:
                field_spec = spec_of(owner.model_fields[step])
                return "", step if field_spec.cli == "argument" else cli_flag(step), owner
            return ": ".join(parts), str(step), owner
        parts.append(str(step))
        owner = _nested_model(owner, step)
    return ": ".join(parts), "", owner


def _nested_model(model: type[Settings] | None, name: str) -> type[Settings] | None:
    """The Settings model a field holds (itself, optionally, or as a list's items), else None."""
    if model is None or name not in model.model_fields:
        return None
    kind = model.model_fields[name].annotation
    for candidate in (kind, optional_kind(kind), *typing.get_args(kind)):
        if isinstance(candidate, type) and issubclass(candidate, Settings):
            return candidate
    return None


def _item_model(model: type[Settings] | None, loc: tuple) -> type[Settings] | None:
    """The Settings model expected at `loc`."""
    for step in loc:
        if isinstance(step, str):
            model = _nested_model(model, step)
    return model


# ---- one value, and the command line ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _adapter(kind: Any, spec: Spec) -> TypeAdapter:
    strict = (optional_kind(kind) or kind) is not Path
    return TypeAdapter(typing.Annotated[kind, Field(strict=strict), spec])


def check_value(label: str, value: Any, kind: Any, spec: Spec, high: float | None = None) -> Any:
    """`value` as a `kind` checked against `spec` as a setting's field would be (ints become floats where a float
    is wanted), or SpectrodiffError: "<label> must be between 1 and 1000, got 5000". `high` overrides the declared
    upper bound (a server's tighter limit)."""
    if value is None and optional_kind(kind) is None:
        raise SpectrodiffError(f"{label} is required")
    try:
        return _adapter(kind, spec).validate_python(value, context={"high": high})
    except ValidationError as exc:
        raise SpectrodiffError(error_words({**exc.errors()[0], "loc": (label,)})) from None


def option_help(model: type[Settings], name: str) -> str:
    """A setting's help with its range, as `--help` shows it: "Denoising steps. [between 1 and 1000]"."""
    field = model.model_fields[name]
    spec = spec_of(field)
    words = range_words(spec, text=(optional_kind(field.annotation) or field.annotation) is str)
    return f"{spec.help} [{words}]" if words else spec.help


def cli_parameters(model: type[Settings], skip: tuple[str, ...] = (), unset_defaults: bool = False
                   ) -> list[inspect.Parameter]:
    """typer parameters for the settings of `model` that the command line takes itself, named and documented by
    their declaration (help, range, default); their values are checked by the model, not by typer, so that a bad one
    reads as it does everywhere else. With `unset_defaults` every option defaults to None, so that a caller can tell
    an option not given from its default (a config file's value then stands)."""
    import typer  # here: importing this module stays cheap for what needs no command line

    params = []
    for name, field in model.fields_in_order().items():
        spec = spec_of(field)
        if spec.cli == "" or name in skip:
            continue
        help_text = option_help(model, name)
        default = None if unset_defaults and spec.cli != "argument" else field.default
        if unset_defaults and field.default not in (REQUIRED, None):
            help_text += f" [default: {field.default}]"
        if spec.cli == "argument":
            info = typer.Argument(help=help_text, show_default=False)
        else:
            info = typer.Option(*(spec.cli.split("/") if spec.cli and "/--no-" not in spec.cli else
                                  [spec.cli or cli_flag(name)]), help=help_text)
        kind = field.annotation | None if default is None and optional_kind(field.annotation) is None else \
            field.annotation
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=typing.Annotated[kind, info],
                                        default=inspect.Parameter.empty if default is REQUIRED else default))
    return params

