"""Command-line flags generated from the config dataclasses: one source of truth.

A field ``width`` of the section ``dynamics`` becomes ``--dynamics-width``; booleans get
``--x/--no-x``; tuples take several values.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import re
import typing
from typing import Any


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def _flag(prefix: str, name: str) -> str:
    return "--" + (f"{prefix}-" if prefix else "") + name.replace("_", "-")


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """Each dataclass field's comment, the flags' help: the one after it on its line
    (``width: int = 256  # the comment``), else the comment lines just above it."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source at hand (e.g. a class made at run time)
        return {}
    comments, above = {}, []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        field = re.match(r"(\w+)\s*:[^#]*?(?:#\s*(.+?))?\s*$", stripped)
        if field and (field.group(2) or above):
            comments[field.group(1)] = field.group(2) or " ".join(above)
        above = []
    return comments


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "", defaults: dict[str, Any] | None = None,
                        exclude: tuple[str, ...] = ()) -> None:
    """Add one flag per field of ``cls`` (but ``exclude``); ``defaults`` override the dataclass defaults."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{prefix} {cls.__name__}" if prefix else cls.__name__)
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        default = (defaults or {}).get(field.name, field.default if field.default is not dataclasses.MISSING else None)
        hint = hints[field.name]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        dest = f"{prefix}__{field.name}" if prefix else field.name
        comment = field_comments(cls).get(field.name, "").replace("%", "%%")  # argparse formats help with %
        kwargs: dict[str, Any] = {"dest": dest, "default": default, "help": f"{comment} (default: %(default)s)".lstrip()}
        if hint is not bool:
            kwargs["metavar"] = field.name.upper()
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is tuple:
            kwargs.update(nargs="+", type=args[0])
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            kwargs["type"] = next(a for a in args if a is not type(None))
        elif hint in (int, float, str):
            kwargs["type"] = hint
        else:
            continue  # nested or structured fields are not set from the command line
        group.add_argument(_flag(prefix, field.name), **kwargs)


def dataclass_from_flags(cls: type, args: argparse.Namespace, prefix: str = "", **overrides: Any):
    """Build ``cls`` from parsed flags (tuples converted back from lists)."""
    values = {}
    for field in dataclasses.fields(cls):
        dest = f"{prefix}__{field.name}" if prefix else field.name
        if hasattr(args, dest):
            value = getattr(args, dest)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    values.update(overrides)
    return cls(**values)
