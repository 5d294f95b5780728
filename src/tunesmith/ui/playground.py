"""The playground: one loaded model, kept between requests, streaming samples with tokens/s."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from tunesmith.generate import GenerationConfig, TextGenerator
from tunesmith.runs import Workspace, is_run_reference, resolve_reference

MAX_SAMPLES = 8


class Playground:
    """Caches the last model loaded (a run, a folder or a hub id); decodes one request at a
    time, since a model is not shared between threads."""

    def __init__(self, workspace: Workspace):
        self._workspace_root = workspace.root
        self._source: str | None = None
        self._generator: TextGenerator | None = None
        self._lock = threading.Lock()

    def _load(self, source: str) -> TextGenerator:
        """The cached generator for `source`, loading it first (under the lock) if it is new."""
        if self._generator is not None and self._source == source:
            return self._generator
        self._generator, self._source = None, None  # free the old model before the new loads
        path = source
        if is_run_reference(source):
            workspace = Workspace(self._workspace_root)
            try:
                path = str(resolve_reference(source, workspace))
            finally:
                workspace.close()
        self._generator = TextGenerator.load(path)
        self._source = source
        return self._generator

    def stream(
        self, source: str, prompt: str, config: GenerationConfig, samples: int = 1
    ) -> Iterator[dict[str, Any]]:
        """Events: {sample, text} as text arrives, {sample, done, tokens, tokens_per_s} as each
        sample ends, then {finished}. Tokens/s counts the sample's new tokens over its time."""
        with self._lock:
            generator = self._load(source)
            for k in range(max(1, min(samples, MAX_SAMPLES))):
                seed = None if config.seed is None else config.seed + k
                request = generator.request(prompt, _with_seed(config, seed))
                started, produced = time.perf_counter(), ""
                for _, delta, sample in generator.stream_batch([request]):
                    produced += delta
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    if sample is None:
                        tokens = len(generator.tokenizer.encode(produced))
                        yield {"sample": k, "text": delta, "tokens_per_s": tokens / elapsed}
                        continue
                    if delta:
                        yield {"sample": k, "text": delta}
                    yield {
                        "sample": k,
                        "done": True,
                        "finish_reason": sample.finish_reason,
                        "tokens": len(sample.token_ids),
                        "tokens_per_s": len(sample.token_ids) / elapsed,
                    }
        yield {"finished": True}


def _with_seed(config: GenerationConfig, seed: int | None) -> GenerationConfig:
    values = dict(vars(config))
    values["seed"] = seed
    return GenerationConfig(**values)
