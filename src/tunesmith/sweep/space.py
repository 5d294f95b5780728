"""The search space: which values of which `finetune` flags the trials take.

    --lr 1e-4,3e-4,1e-3     a list: every value in a grid, one at random with --random
    --lr 1e-5:1e-3:log      a range, log-uniform (with --random N only)
    --dropout 0:0.2         a range, uniform

Flags are checked against the finetune options they name (`Option`: the field's type and
choices, which the CLI reads from FinetuneConfig), so a typo fails before any trial starts.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from tunesmith.errors import UsageError


@dataclass(frozen=True)
class Option:
    """A finetune option a sweep may vary: its field name, value type and choices."""

    name: str
    type: type
    choices: tuple[Any, ...] | None = None
    help: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Dimension:
    """One swept option: a list of values, or a range (low, high, log)."""

    option: Option
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def sample(self, rng: random.Random) -> Any:
        if not self.is_range:
            return rng.choice(self.values)
        assert self.low is not None and self.high is not None
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return round(value) if self.option.type is int else float(f"{value:.4g}")

    def describe(self) -> str:
        if self.is_range:
            return f"{self.low}:{self.high}" + (":log" if self.log else "")
        return ",".join(map(str, self.values))


def parse_dimension(option: Option, text: str) -> Dimension:
    """`--flag TEXT` as a Dimension; a bad value is a UsageError naming the flag."""
    if option.type not in (int, float, str):
        raise UsageError(
            f"{option.flag}: only options with a number or a word as value can be swept"
        )
    parts = text.split(":")
    if option.type in (int, float) and len(parts) in (2, 3):
        return _range(option, text, parts)
    values = tuple(_value(option, v.strip(), text) for v in text.split(",") if v.strip())
    if not values:
        raise UsageError(f"{option.flag} {text!r}: give values (a,b,c) or a range (a:b[:log])")
    return Dimension(option, values=values)


def _range(option: Option, text: str, parts: list[str]) -> Dimension:
    low, high = (_value(option, p.strip(), text) for p in parts[:2])
    log = len(parts) == 3
    if log and parts[2].strip() != "log":
        raise UsageError(f"{option.flag} {text!r}: a range is a:b (uniform) or a:b:log")
    if not low < high:
        raise UsageError(f"{option.flag} {text!r}: a range's low end must be below its high end")
    if log and low <= 0:
        raise UsageError(f"{option.flag} {text!r}: a log range needs positive ends")
    return Dimension(option, low=float(low), high=float(high), log=log)


def _value(option: Option, text: str, whole: str) -> Any:
    try:
        value = option.type(text)
    except ValueError:
        kind = {int: "a whole number", float: "a number", str: "a word"}[option.type]
        raise UsageError(f"{option.flag} {whole!r}: {text!r} is not {kind}") from None
    if option.choices and value not in option.choices:
        allowed = ", ".join(map(str, option.choices))
        raise UsageError(f"{option.flag} {whole!r}: {text!r} is not one of {allowed}")
    return value


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]

    @classmethod
    def parse(cls, ranges: dict[str, str], options: dict[str, Option]) -> SearchSpace:
        """`ranges` ({field name: text}) against the options that may be swept."""
        if not ranges:
            raise UsageError(
                "give at least one range to sweep, e.g. --lr 1e-4,3e-4,1e-3 "
                "(any finetune option, before the `-- finetune ...` command)"
            )
        dims = []
        for name, text in ranges.items():
            if name not in options:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag}: not a finetune option a sweep can vary")
            dims.append(parse_dimension(options[name], str(text)))
        return cls(tuple(dims))

    def trials(self, count: int | None, seed: int = 0) -> list[dict[str, Any]]:
        """Each trial's values: the whole grid, or `count` random draws."""
        if count is None:
            ranged = [d.option.flag for d in self.dimensions if d.is_range]
            if ranged:
                raise UsageError(
                    f"{', '.join(ranged)}: a range (a:b) needs --random N; "
                    "list values (a,b,c) for a grid"
                )
            names = [d.option.name for d in self.dimensions]
            grid = itertools.product(*(d.values for d in self.dimensions))
            return [dict(zip(names, row, strict=True)) for row in grid]
        rng = random.Random(seed)
        return [{d.option.name: d.sample(rng) for d in self.dimensions} for _ in range(count)]

    def to_dict(self) -> dict[str, str]:
        return {d.option.name: d.describe() for d in self.dimensions}
