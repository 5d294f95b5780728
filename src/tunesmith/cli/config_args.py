"""Command-line flags made from a config dataclass's `option()` fields (tunesmith.options).

`add_config_arguments(parser, FinetuneConfig)` adds one flag per field with the field's type,
choices and help, and "(default: X)" from the field's default. Flags default to "not given", so
`given_options(args, FinetuneConfig)` returns only what the user typed; the dataclass fills in
the rest, which keeps every default in one place (and lets --resume tell a typed value from a
default).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from tunesmith.options import option_metadata

NOT_GIVEN = argparse.SUPPRESS


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config_class: type,
    *,
    only: typing.Iterable[str] | None = None,
    exclude: typing.Iterable[str] = (),
) -> None:
    """One flag per option() field of `config_class` (those in `only`, less `exclude`)."""
    wanted = set(only) if only is not None else None
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        meta = option_metadata(f)
        if meta is None or not meta["cli"] or f.name in set(exclude):
            continue
        if wanted is not None and f.name not in wanted:
            continue
        flags, kwargs = _argument(f, hints[f.name], meta)
        parser.add_argument(*flags, dest=f.name, default=NOT_GIVEN, **kwargs)


def add_config_groups(
    parser: argparse.ArgumentParser, config_class: type, groups: dict[str, str]
) -> None:
    """Flags for `config_class` under headings: {title: "field names"}; the rest go first."""
    grouped = [name for names in groups.values() for name in names.split()]
    unknown = set(grouped) - {f.name for f in dataclasses.fields(config_class)}
    assert not unknown, f"{config_class.__name__} has no fields {sorted(unknown)}"
    add_config_arguments(parser, config_class, exclude=grouped)
    for title, names in groups.items():
        add_config_arguments(parser.add_argument_group(title), config_class, only=names.split())


def given_options(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The fields of `config_class` that were given on the command line, as field values."""
    names = {f.name for f in dataclasses.fields(config_class)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _argument(f: dataclasses.Field, hint: Any, meta: dict) -> tuple[list[str], dict[str, Any]]:
    base = unwrap_optional(hint)
    flags = list(meta["flags"]) or [_flag(f.name, base, f.default)]
    kwargs: dict[str, Any] = {"help": _help(f, meta, base)}
    if base is bool:
        kwargs["action"] = "store_false" if f.default is True else "store_true"
        return flags, kwargs
    if typing.get_origin(base) is tuple:
        (kwargs["type"],) = {a for a in typing.get_args(base) if a is not Ellipsis}
        kwargs.update({"action": "append"} if meta["repeat"] else {"nargs": "+"})
    else:
        kwargs["type"] = base
    kwargs.update({k: meta[k] for k in ("choices", "metavar") if meta[k]})
    if kwargs["type"] in (int, float) and "choices" not in kwargs:
        kwargs.setdefault("metavar", "N" if kwargs["type"] is int else "X")  # not --lr LR
    return flags, kwargs


def _flag(name: str, base: Any, default: Any) -> str:
    if base is bool and default is True:
        return "--no-" + name.replace("_", "-")
    return "--" + name.replace("_", "-")


def _help(f: dataclasses.Field, meta: dict, base: Any) -> str:
    # argparse expands %-formats in help; our texts are literal.
    text = meta["help"].replace("%", "%%")
    if base is bool:
        return text
    shown = meta["default_help"]
    if shown is None and f.default not in (None, dataclasses.MISSING, "", ()):
        shown = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
    if shown is None:
        return text
    return f"{text} (default: {str(shown).replace('%', '%%')})"


def unwrap_optional(hint: Any) -> Any:
    """X for `X | None` / Optional[X]; the hint itself otherwise."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint
