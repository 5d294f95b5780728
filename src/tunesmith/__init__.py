"""tunesmith: fine-tune GPT-2-family language models on your own text and generate from them.

    import tunesmith
    gen = tunesmith.load("gpt2")                       # hub id, folder, or "runs/3"
    print(gen.generate("Why did", num_samples=3)[0].text)
    tunesmith.prepare_data(["jokes.csv"], tunesmith.DataConfig(column="Joke"), "data/")
    tunesmith.finetune(tunesmith.FinetuneConfig(model="gpt2", data="data/"), output_dir="out")

Names are imported on first use, so `import tunesmith` (and the CLI's start) stays fast;
editors see them through the TYPE_CHECKING imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tunesmith.version import __version__ as __version__

# Editors and type checkers read these; at run time the names load on first use (_EXPORTS).
if TYPE_CHECKING:
    from tunesmith.checkpoint import load_checkpoint, save_checkpoint
    from tunesmith.data import DataConfig, load_training_examples, prepare_data
    from tunesmith.generate import GenerationConfig, GenerationRequest, Sample, TextGenerator
    from tunesmith.model import GPT2, GPT2Config
    from tunesmith.runs import open_workspace, recorded_run
    from tunesmith.server import ServerConfig, serve
    from tunesmith.train import FinetuneConfig, FinetuneResult, finetune

_EXPORTS = {
    "TextGenerator": "tunesmith.generate",
    "GenerationConfig": "tunesmith.generate",
    "GenerationRequest": "tunesmith.generate",
    "Sample": "tunesmith.generate",
    "GPT2": "tunesmith.model",
    "GPT2Config": "tunesmith.model",
    "load_checkpoint": "tunesmith.checkpoint",
    "save_checkpoint": "tunesmith.checkpoint",
    "DataConfig": "tunesmith.data",
    "prepare_data": "tunesmith.data",
    "load_training_examples": "tunesmith.data",
    "FinetuneConfig": "tunesmith.train",
    "FinetuneResult": "tunesmith.train",
    "finetune": "tunesmith.train",
    "serve": "tunesmith.server",
    "ServerConfig": "tunesmith.server",
    "recorded_run": "tunesmith.runs",
    "open_workspace": "tunesmith.runs",
}

__all__ = [
    "load",
    "TextGenerator",
    "GenerationConfig",
    "GenerationRequest",
    "Sample",
    "GPT2",
    "GPT2Config",
    "load_checkpoint",
    "save_checkpoint",
    "DataConfig",
    "prepare_data",
    "load_training_examples",
    "FinetuneConfig",
    "FinetuneResult",
    "finetune",
    "serve",
    "ServerConfig",
    "recorded_run",
    "open_workspace",
]


def load(
    source: str = "gpt2", device: str = "auto", dtype: str = "auto", quantize: str = "none"
) -> TextGenerator:
    """A TextGenerator for a hub id (gpt2, distilgpt2, ...), a model folder, or a run;
    quantize="int8" stores the linear layers and LM head as int8 (faster decoding on CPU)."""
    from tunesmith.generate import TextGenerator
    from tunesmith.runs.references import resolve_reference

    path = str(resolve_reference(source))  # runs/N → its model folder; anything else as given
    generator = TextGenerator.load(path, device=device, dtype=dtype, quantize=quantize)
    generator.source = str(source)
    return generator


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tunesmith' has no attribute {name!r}")
