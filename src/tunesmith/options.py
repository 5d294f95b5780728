"""`option()`: a config dataclass field that also describes its command-line flag.

Each option's default, type, choices and help live once, on the field of its config dataclass
(FinetuneConfig, DataConfig, GenerationConfig, ServerConfig, ...); `tunesmith.cli.config_args`
turns those fields into argparse arguments, so the CLI never re-types a default or a choice.

    @dataclass(frozen=True)
    class GenerationConfig:
        length: int = option(70, "new tokens per sample")
        stop: tuple[str, ...] = option((), "end a sample where TEXT appears", repeat=True,
                                       metavar="TEXT")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    flags: Sequence[str] = (),
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    repeat: bool = False,
    default_help: str | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field whose metadata is its flag.

    flags: the option strings (default `--field-name`); choices: allowed values; repeat: a
    tuple field given by repeating the flag (`--stop A --stop B`) instead of listing values;
    default_help: how --help shows the default when the value alone would not say it
    (e.g. None meaning "the model's context"); cli=False: a field the CLI does not offer.
    """
    metadata = {
        "help": help,
        "flags": tuple(flags),
        "choices": tuple(choices) if choices is not None else None,
        "metavar": metavar,
        "repeat": repeat,
        "default_help": default_help,
        "cli": cli,
    }
    if isinstance(default, (list, dict, set)):
        raise TypeError("option() defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata={"option": metadata})


def option_metadata(f: dataclasses.Field) -> dict[str, Any] | None:
    """The option() metadata of a dataclass field, or None for a plain field."""
    return f.metadata.get("option")
