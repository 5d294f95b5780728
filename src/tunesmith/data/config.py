"""`DataConfig`: how `tunesmith data` reads, cleans and splits its sources; each field carries
its flag (tunesmith.options)."""

from __future__ import annotations

import codecs
from dataclasses import asdict, dataclass
from typing import Any

from tunesmith.errors import UsageError
from tunesmith.options import option, require_finite

FORMATS = ("auto", "csv", "tsv", "json", "jsonl", "text")
SPLITS = ("lines", "paragraphs", "file")
ERROR_MODES = ("strict", "replace", "ignore")


@dataclass(frozen=True)
class DataConfig:
    """Every option of a data run; validated on construction, saved with the run."""

    format: str = option("auto", "input format", choices=FORMATS, default_help="detect")
    column: str | None = option(
        None, "CSV/TSV column holding the text", metavar="NAME", default_help="the obvious one"
    )
    field: str | None = option(
        None,
        "JSON/JSONL field holding the text (dotted for nesting: a.b)",
        metavar="NAME",
        default_help="the obvious one",
    )
    split: str = option(
        "lines", "plain text: one example per line, paragraph or file", choices=SPLITS
    )
    min_chars: int = option(1, "drop shorter examples", metavar="N")
    max_chars: int | None = option(None, "drop longer examples", metavar="N")
    val_fraction: float = option(0.05, "share held out for validation", metavar="F")
    seed: int = option(0, "seed of the validation split")
    encoding: str = option("utf-8", "text encoding")
    errors: str = option("strict", "what to do with undecodable bytes", choices=ERROR_MODES)
    tokenizer: str | None = option(
        "gpt2",
        "model whose tokenizer counts tokens: hub id, folder or runs/N ('none' to skip)",
        metavar="MODEL",
    )
    context: int | None = option(
        None, "context length", metavar="N", default_help="the model's, or 1024"
    )
    max_download_mb: float = option(200.0, "refuse larger downloads", metavar="MB")
    max_input_mb: float = option(
        1024.0,
        "refuse a source that holds (or, gzip-compressed, expands to) more than this",
        metavar="MB",
    )
    timeout: float = option(30.0, "seconds per download try", metavar="S")
    retries: int = option(3, "download retries on connection errors and 5xx", metavar="N")

    def __post_init__(self) -> None:
        require_finite(self)
        if self.format not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.split not in SPLITS:
            raise UsageError(f"--split must be one of {', '.join(SPLITS)}, not {self.split!r}")
        if self.errors not in ERROR_MODES:
            raise UsageError(
                f"--errors must be one of {', '.join(ERROR_MODES)}, not {self.errors!r}"
            )
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise UsageError(
                f"unknown encoding {self.encoding!r}; use a Python codec name such as "
                "utf-8, latin-1 or cp1252"
            ) from None
        if self.min_chars < 0:
            raise UsageError(f"--min-chars must be 0 or more, not {self.min_chars}")
        if self.max_chars is not None and self.max_chars < max(self.min_chars, 1):
            raise UsageError(
                f"--max-chars ({self.max_chars}) must be at least 1 and at least "
                f"--min-chars ({self.min_chars})"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(
                f"--val-fraction must be at least 0 and below 1, not {self.val_fraction}"
            )
        if self.context is not None and self.context < 1:
            raise UsageError(f"--context must be a positive number of tokens, not {self.context}")
        if self.max_input_mb <= 0:
            raise UsageError(f"--max-input-mb must be positive, not {self.max_input_mb}")
        if self.max_download_mb <= 0:
            raise UsageError(f"--max-download-mb must be positive, not {self.max_download_mb}")
        if self.timeout <= 0:
            raise UsageError(f"--timeout must be positive, not {self.timeout}")
        if self.retries < 0:
            raise UsageError(f"--retries must be 0 or more, not {self.retries}")

    @property
    def max_download_bytes(self) -> int:
        return int(self.max_download_mb * 1024 * 1024)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
