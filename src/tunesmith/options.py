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
import math
from collections.abc import Sequence
from typing import Any

from tunesmith.errors import UsageError

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


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag a field is given by, for messages."""
    meta = option_metadata(f)
    if meta is not None and meta["flags"]:
        return meta["flags"][-1]
    return "--" + f.name.replace("_", "-")


def require_finite(config: Any) -> None:
    """Refuse nan and infinity in a config's number fields: every comparison with nan is
    false, so range checks alone let `--temperature nan` through (and it samples garbage)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{flag_of(f)} must be a finite number, not {value}")
