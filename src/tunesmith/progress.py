"""One policy for every progress bar (fine-tuning, data tokenizing, downloads, generation).

On a terminal: a tqdm bar, redrawn in place. Anywhere else (a pipe, a log file, a run's
log.txt under `tunesmith run`): no bar frames, which would pile up one per step (tqdm redraws
on every `set_postfix`), but a plain line at most every PLAIN_EVERY_S seconds, and a last one
at the end when it ran long enough to have printed any.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

PLAIN_EVERY_S = 30.0


def progress_bar(
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    *,
    enabled: bool = True,
    stream: TextIO | None = None,
    **tqdm_options: Any,
) -> Any:
    """A tqdm bar on a terminal, plain lines elsewhere, nothing when not `enabled`; each
    offers update(n), set_postfix(**values), clear(), close() and `with`."""
    stream = stream or sys.stderr
    if not enabled:
        return tqdm(total=total, disable=True)
    if _is_terminal(stream):
        return tqdm(total=total, desc=desc, unit=unit, file=stream, **tqdm_options)
    megabytes = unit == "B" and tqdm_options.get("unit_scale") is True
    initial = tqdm_options.get("initial", 0)
    return PlainProgress(total, desc, unit, stream, initial=initial, megabytes=megabytes)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class PlainProgress:
    """Progress as whole lines, at most one every `every` seconds (and one at the end if any
    was written), for streams that are not a terminal."""

    def __init__(
        self,
        total: float | None,
        desc: str | None,
        unit: str,
        stream: TextIO,
        *,
        initial: float = 0,
        megabytes: bool = False,
        every: float = PLAIN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.n = self.start_n = initial
        self.megabytes, self.every, self.clock = megabytes, every, clock
        self.started = self.last = clock()
        self.postfix: dict[str, Any] = {}
        self.lines_written = 0
        self.closed = False
        self._shown: float | None = None  # the count the last line showed

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.every:
            self._write()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = values  # shown with the next line, never a line of its own

    def clear(self) -> None:
        """Nothing to clear: a plain line is never redrawn."""

    def close(self) -> None:
        if not self.closed and self.lines_written and self.n != self._shown:
            self._write()
        self.closed = True

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self) -> None:
        now = self.clock()
        rate = (self.n - self.start_n) / max(now - self.started, 1e-9)
        if self.megabytes:
            rate /= 1024 * 1024
        unit = "MB" if self.megabytes else self.unit
        done = self._amount(self.n)
        if self.total:
            done += f"/{self._amount(self.total)} {unit} ({100 * self.n / self.total:.0f}%)"
        else:
            done += f" {unit}"
        speed = f"{rate:,.2f} {unit}/s" if rate < 10 else f"{rate:,.0f} {unit}/s"
        parts = [f"{self.desc}: {done}" if self.desc else done, speed]
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        self.stream.write(", ".join(parts) + "\n")
        self.stream.flush()
        self.last, self._shown = now, self.n
        self.lines_written += 1

    def _amount(self, value: float) -> str:
        if self.megabytes:
            return f"{value / 1024 / 1024:,.1f}"
        return f"{value:,.0f}"
