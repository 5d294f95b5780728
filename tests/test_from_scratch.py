"""`finetune --from-scratch SIZE`: a random GPT-2 with GPT-2's shipped tokenizer, trained on the
user's data with no download; it learns, reproduces with --seed and reloads in transformers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, GPT2LMHeadModel
from transformers import GPT2Config as HFConfig

from tunesmith.checkpoint import load_checkpoint
from tunesmith.cli import main
from tunesmith.errors import UsageError
from tunesmith.model import GPT2
from tunesmith.model_sizes import SIZES, describe_sizes
from tunesmith.train import FinetuneConfig, finetune

# Joke-shaped lines from a few templates: enough structure for a tiny model to learn in seconds.
SUBJECTS = ["chicken", "duck", "robot", "banker", "skeleton", "teacher", "cat", "pirate"]
PLACES = ["road", "river", "street", "bridge", "park", "market"]
JOKES = [
    f"Why did the {s} cross the {p}? To get to the other {p}." for s in SUBJECTS for p in PLACES
]


def scratch_config(**overrides) -> FinetuneConfig:
    values = dict(
        from_scratch="tiny",
        data="(in memory)",
        batch_size=8,
        samples=0,
        report_samples=2,
        sample_tokens=8,
        progress=False,
    )
    return FinetuneConfig(**{**values, **overrides})


def train(tmp_path, name: str, **overrides):
    config = scratch_config(**overrides)
    return finetune(config, output_dir=tmp_path / name, train_texts=JOKES[6:], val_texts=JOKES[:6])


@pytest.mark.parametrize("size", list(SIZES))
def test_size_table_parameter_counts(size):
    from tunesmith.model_sizes import model_size

    shape = model_size(size)
    with torch.device("meta"):  # shapes only, no memory
        model = GPT2(shape.config(), init_weights=False)
    assert shape.num_parameters == sum(p.numel() for p in model.parameters())
    assert f"{size} ({shape.num_parameters / 1e6:.1f}M" in describe_sizes()


@pytest.mark.parametrize("size", ["tiny", "mini"])
def test_parameter_counts_match_transformers(size):
    shape = SIZES[size]
    hf = GPT2LMHeadModel(HFConfig(n_layer=shape.n_layer, n_head=shape.n_head, n_embd=shape.n_embd))
    assert hf.num_parameters() == shape.num_parameters


def test_gpt2_size_is_gpt2_124m():
    assert SIZES["gpt2"].num_parameters == 124_439_808  # transformers' count for `gpt2`


def test_a_tiny_model_learns_and_reloads_in_transformers(tmp_path, no_network):
    result = train(tmp_path, "run", epochs=6)
    assert result.val_loss_after < 0.5 * result.val_loss_before  # from ~10.8 (uniform)
    folder = result.model_dir
    config = json.loads((folder / "config.json").read_text())
    assert (config["n_layer"], config["n_embd"], config["vocab_size"]) == (2, 128, 50257)
    x = torch.tensor([[464, 9015, 11, 3272, 262, 2975, 13, 50256, 40, 1101]])
    reference = GPT2LMHeadModel.from_pretrained(folder).eval()
    ours, tokenizer, _ = load_checkpoint(folder)
    with torch.no_grad():
        assert (ours(x) - reference(x).logits).abs().max() <= 1e-4
    text = JOKES[0] + "<|endoftext|>"
    assert AutoTokenizer.from_pretrained(str(folder)).encode(text) == tokenizer.encode(text)
    assert not any(no_network.iterdir())  # nothing downloaded


def test_the_seed_makes_it_reproducible(tmp_path):
    a = load_file(train(tmp_path, "a", max_steps=3, seed=5).model_dir / "model.safetensors")
    b = load_file(train(tmp_path, "b", max_steps=3, seed=5).model_dir / "model.safetensors")
    c = load_file(train(tmp_path, "c", max_steps=3, seed=6).model_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["transformer.wte.weight"], c["transformer.wte.weight"])


def test_small_data_defaults():
    tiny = FinetuneConfig(from_scratch="tiny", data="d.txt")
    assert tiny.learning_rate == SIZES["tiny"].lr and tiny.learning_rate > 1e-4
    assert tiny.warmup_steps(400) == 20 and tiny.warmup_steps(100_000) == 100
    assert FinetuneConfig(from_scratch="tiny", data="d.txt", warmup=0).warmup_steps(400) == 0
    fine_tune = FinetuneConfig(data="d.txt")
    assert fine_tune.learning_rate == 1e-4 and fine_tune.warmup_steps(400) == 0
    assert SIZES["small"].config().resid_pdrop == SIZES["small"].dropout


def test_unknown_size_is_refused_by_the_cli(workspace, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--data", "d.txt", "--from-scratch", "huge"])
    assert exit_info.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--from-scratch must be one of tiny"):
        FinetuneConfig(from_scratch="huge", data="d.txt")


@pytest.mark.parametrize("options", [["--lora"], ["--model", "distilgpt2"]])
def test_from_scratch_with_a_model_or_lora_is_refused(workspace, capsys, options):
    code = main(["finetune", "--data", "d.txt", "--from-scratch", "tiny", *options])
    err = capsys.readouterr().err
    assert code == 2 and "leave out --lora and --model" in err and err.count("\n") == 1


def test_cli_from_scratch_offline(workspace, no_network, capsys):
    (workspace / "jokes.txt").write_text("\n".join(JOKES) + "\n")
    quick = ["--max-steps", "2", "--report-samples", "2", "--sample-tokens", "8"]
    code = main(["finetune", "--from-scratch", "tiny", "--data", "jokes.txt", *quick])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "finetune a random tiny GPT-2" in out and "6,960,768 of 6,960,768" in out
    assert "validation perplexity" in out
    assert (workspace / "runs" / "1" / "model" / "model.safetensors").is_file()
    saved = json.loads((workspace / "runs" / "1" / "finetune_config.json").read_text())
    assert saved["from_scratch"] == "tiny"
