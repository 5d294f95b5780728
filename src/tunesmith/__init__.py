"""tunesmith: fine-tune GPT-2-family language models on your own text and generate from them.

    import tunesmith
    gen = tunesmith.load("gpt2")                       # hub id, folder, or "runs/3"
    print(gen.generate("Why did", num_samples=3)[0].text)
    tunesmith.prepare_data(["jokes.csv"], tunesmith.DataConfig(column="Joke"), "data/")
    tunesmith.finetune(tunesmith.FinetuneConfig(model="gpt2", data="data/"), output_dir="out")

Names are imported on first use, so `import tunesmith` (and the CLI's start) stays fast.
"""

from __future__ import annotations

import importlib

from tunesmith.version import __version__ as __version__

_EXPORTS = {
    "TextGenerator": "tunesmith.generate",
    "GenerationConfig": "tunesmith.generate",
    "Sample": "tunesmith.generate",
    "GPT2": "tunesmith.model",
    "GPT2Config": "tunesmith.model",
    "load_checkpoint": "tunesmith.checkpoint",
    "save_checkpoint": "tunesmith.checkpoint",
    "DataConfig": "tunesmith.data",
    "prepare_data": "tunesmith.data",
    "load_training_examples": "tunesmith.data",
    "FinetuneConfig": "tunesmith.train",
    "finetune": "tunesmith.train",
    "serve": "tunesmith.server",
    "ServerConfig": "tunesmith.server",
    "recorded_run": "tunesmith.runs",
    "open_workspace": "tunesmith.runs",
}

__all__ = ["load", *_EXPORTS]


def load(source: str = "gpt2", device: str = "auto", dtype: str = "auto"):
    """A TextGenerator for a hub id (gpt2, distilgpt2, ...), a model folder, or a run."""
    from tunesmith.generate import TextGenerator
    from tunesmith.runs.references import resolve_reference

    path = str(resolve_reference(source))  # runs/N → its model folder; anything else as given
    generator = TextGenerator.load(path, device=device, dtype=dtype)
    generator.source = str(source)
    return generator


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tunesmith' has no attribute {name!r}")
