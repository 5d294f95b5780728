"""The request log: one JSON line per request (into the run folder), one access line on
stderr, and the running totals a run records as its metrics.

The access line is made safe for a terminal: control characters (a request path can carry
escape sequences that would recolour or retitle the operator's terminal) are written as
`\\xNN` escapes."""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path
from typing import Any, TextIO


class RequestLog:
    """Thread-safe: every HTTP thread records into the same log."""

    def __init__(self, path: str | Path | None = None, echo: TextIO | None = None):
        self.path = Path(path) if path is not None else None
        self._echo = echo
        self._lock = threading.Lock()
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self.requests = self.errors = self.prompt_tokens = self.completion_tokens = 0

    def record(self, entry: dict[str, Any]) -> None:
        """entry: time, method, path, status, latency_s, and for completions the token counts."""
        try:
            line = json.dumps(entry, ensure_ascii=False)
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate somewhere: keep it as an escape
            line = json.dumps(entry)
        with self._lock:
            self.requests += 1
            self.errors += entry["status"] >= 400
            self.prompt_tokens += entry.get("prompt_tokens", 0)
            self.completion_tokens += entry.get("completion_tokens", 0)
            if self._file is not None and not self._file.closed:
                self._file.write(line + "\n")
                self._file.flush()
            echo = self._echo if self._echo is not None else sys.stderr
            print(_access_line(entry), file=echo, flush=True)

    def totals(self) -> dict[str, int]:
        with self._lock:
            return {
                "requests": self.requests,
                "errors": self.errors,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
            }

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()


# C0 and C1 controls and DEL, plus the bidirectional overrides that reorder what is shown.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """text with every control character written as an escape, for a terminal."""
    return _UNSAFE.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 256 else f"\\u{ord(m[0]):04x}", text
    )


def _access_line(e: dict[str, Any]) -> str:
    tokens = ""
    if "prompt_tokens" in e:
        tokens = f" {e['prompt_tokens']}+{e['completion_tokens']} tokens"
    error = f" ({e['error']})" if e.get("error") else ""
    warning = f" [warning: {e['warning']}]" if e.get("warning") else ""
    line = f"{e['method']} {e['path']} {e['status']}{tokens} {e['latency_s']:.3f}s{error}{warning}"
    return printable(line)
