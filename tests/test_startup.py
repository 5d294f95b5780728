"""A fast start: `tunesmith generate` imports only what it uses, and weights load straight into
their dtype without any random init. (Times are the benchmarks' business, never asserted.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tunesmith.checkpoint import load_checkpoint
from tunesmith.model import GPT2, GPT2Config

HEAVY = [
    "matplotlib",
    "transformers",
    "huggingface_hub",  # a local folder needs no hub
    "torch._dynamo",  # 1.5 s: what building a model on the meta device imports
    "tunesmith.train",
    "tunesmith.data",
    "tunesmith.server",
    "tunesmith.jobs",
]


def test_generate_from_a_local_folder_imports_nothing_heavy(tiny_model_dir, workspace):
    script = (
        "import json, sys\n"
        "from tunesmith.cli import main\n"
        f"code = main(['generate', '--model', {str(tiny_model_dir)!r}, '--length', '1', "
        "'--seed', '1', '--no-run'])\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    code, modules = json.loads(result.stdout.splitlines()[-1])
    assert code == 0
    assert "tunesmith.checkpoint" in modules  # it did load the model
    loaded = [m for m in HEAVY if m in modules]
    assert loaded == []


def test_model_without_init_runs_no_init_function(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an init function ran")

    for name in ("normal_", "uniform_", "kaiming_uniform_", "ones_", "zeros_"):
        monkeypatch.setattr(torch.nn.init, name, refuse)
    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=16, vocab_size=64), False)
    assert model.lm_head.weight is model.transformer.wte.weight
    monkeypatch.undo()
    # Layers built afterwards initialise as usual again.
    layer = torch.nn.Linear(32, 32)
    assert layer.weight.abs().sum() > 0 and layer.bias.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_weights_load_straight_into_their_dtype(tiny_model_dir, dtype):
    from safetensors.torch import load_file

    model, _, _ = load_checkpoint(tiny_model_dir, dtype=dtype)
    params = dict(model.named_parameters())
    assert {p.dtype for p in params.values()} == {dtype}
    assert all(p.is_contiguous() for p in params.values())
    stored = load_file(tiny_model_dir / "model.safetensors")
    attn = stored["transformer.h.0.attn.c_attn.weight"]  # Conv1D: (in, out)
    assert torch.equal(params["transformer.h.0.attn.c_attn.weight"], attn.t().to(dtype))
    assert model.lm_head.weight is model.transformer.wte.weight
