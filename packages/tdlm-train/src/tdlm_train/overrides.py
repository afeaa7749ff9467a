"""Nested dataclass configs: ``--section.key value`` overrides, and JSON round trips.

docs/architecture.md: configs are small keyword-only dataclasses nested per component; presets are
plain functions; the fully resolved config is saved with every run and checkpoint. This module
is the generic part: it converts command-line strings by the fields' type hints, rejects unknown
keys and bad values with one clear sentence, and rebuilds a config from its saved JSON.
"""

import dataclasses
import inspect
import re
import types
import typing
from typing import Any, TypeVar

from .errors import UserError

__all__ = ["apply_overrides", "config_from_dict", "config_to_dict", "field_help"]

C = TypeVar("C")


def _convert(text: str, hint: Any, flag: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if text not in choices:
            raise UserError(f"{flag} expects one of {', '.join(choices)}; got {text!r}")
        return text
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        return _convert(text, options[0], flag)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_convert(p.strip(), item, flag) for p in text.split(",") if p.strip())
    if hint is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{flag} expects true or false, got {text!r}")
    if hint in (int, float, str):
        try:
            return hint(text)
        except ValueError:
            raise UserError(f"{flag} expects {hint.__name__}, got {text!r}") from None
    raise UserError(f"{flag} cannot be set from the command line")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply_overrides(config: C, overrides: dict[str, str]) -> C:
    """A copy of ``config`` with ``{"section.key": "value"}`` applied (dots walk nested configs).

    Every value is converted first, and the configs' own checks run once on the result, so the
    order of the flags never matters (``--minutes 0 --max_steps 2`` is ``--max_steps 2 --minutes
    0``). Every flag that cannot be read is named, one line each.
    """
    values = dataclasses.asdict(config)
    errors = []
    for dotted, text in overrides.items():
        try:
            _set(type(config), values, dotted.split("."), text, f"--{dotted}")
        except UserError as error:
            errors.append(str(error))
    if errors:
        raise UserError("\n".join(errors))
    return config_from_dict(type(config), values, "")


def _set(cls: type, values: dict[str, Any], path: list[str], text: str, flag: str) -> None:
    types_ = _field_types(cls)
    name = path[0].replace("-", "_")
    if name not in types_:
        raise UserError(f"unknown option {flag}; valid here: {', '.join(sorted(types_))}")
    hint = types_[name]
    if len(path) > 1:
        if not dataclasses.is_dataclass(hint):
            raise UserError(f"unknown option {flag}: {name} has no sub-options")
        _set(hint, values[name], path[1:], text, flag)
        return
    if dataclasses.is_dataclass(hint):
        raise UserError(f"{flag} is a section; set one of its fields, e.g. {flag}.<field>")
    values[name] = _convert(text, hint, flag)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON-ready data (tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(
    cls: type[C], data: dict[str, Any], where: str = "config", path: str = ""
) -> C:
    """Rebuild a config saved by :func:`config_to_dict`; unknown or missing keys are errors.

    ``where`` names the file it came from ("" for command-line options); a value a config
    refuses (its own ``__post_init__``, a library's ``ValueError``) becomes one sentence
    naming the section, as ``--section`` for options.
    """
    at = f"--{path}" if not where else f"{where} [{path or 'top level'}]"
    if not isinstance(data, dict):
        raise UserError(f"{at}: expected an object, got {type(data).__name__}")
    types_ = _field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        raise UserError(f"{at}: unknown keys {sorted(unknown)}")
    values, problems = {}, []
    for name, hint in types_.items():
        if name not in data:
            continue  # a field added since: its default applies
        value = data[name]
        if dataclasses.is_dataclass(hint):
            try:  # every section is checked, so each bad value is named at once
                value = config_from_dict(hint, value, where, f"{path}.{name}" if path else name)
            except UserError as error:
                problems.append(str(error))
                continue  # its default stands in, so that this level's own checks run too
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    try:
        built = cls(**values)
    except UserError as error:
        problems.append(str(error))
    except (ValueError, TypeError) as error:  # a library config's own check
        problems.append(f"{at}: {error}")
    if problems:
        raise UserError("\n".join(problems))
    return built


def _field_comments(cls: type) -> dict[str, str]:
    """Each field's trailing ``# comment`` in the class source: its one-line help."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    comments = {}
    for line in lines:
        match = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def field_help(config: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """``[("--section.key", "default", "meaning")]`` for every leaf field (``--help``); a field
    with a fixed set of values lists them."""
    rows = []
    comments = _field_comments(type(config))
    hints = _field_types(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        flag = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            rows += field_help(value, f"{flag}.")
            continue
        meaning = comments.get(field.name, "")
        if typing.get_origin(hints[field.name]) is typing.Literal:
            meaning += f": {' | '.join(typing.get_args(hints[field.name]))}"
        rows.append((f"--{flag}", repr(value), meaning))
    return rows
