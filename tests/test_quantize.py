"""Weight-only int8 (`--quantize int8`): int8 weights with per-channel scales, logits and
perplexity close to the float model, generation and the library entry points."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

import tunesmith
from tunesmith.errors import UsageError
from tunesmith.generate import GenerationConfig, TextGenerator
from tunesmith.quantize import Int8Embedding, Int8Linear, quantize_rows


@pytest.mark.parametrize("in_features", [64, 40], ids=["cpu-kernel", "dequantized"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_is_the_per_channel_dequantized_product(in_features, dtype):
    torch.manual_seed(0)
    linear = torch.nn.Linear(in_features, 96)
    with torch.no_grad():
        linear.weight[3] *= 50  # one loud channel must not cost the others their precision
    layer = Int8Linear.from_linear(linear, dtype)
    assert layer.qweight.dtype == torch.int8 and layer.scale.shape == (96,)
    assert layer._packed(torch.zeros(1, in_features, dtype=dtype)) == (in_features == 64)
    x = torch.randn(2, 5, in_features, dtype=dtype)
    dequantized = layer.qweight.float() * layer.scale.float()[:, None]
    expected = x.float() @ dequantized.t() + linear.bias.detach().to(dtype).float()
    got = layer(x)
    assert got.shape == (2, 5, 96) and got.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(got.float(), expected, atol=tol * float(expected.abs().max()), rtol=0)
    # Against the float layer, the error is that of rounding to 1/127 of each channel's range.
    exact = linear(x.float()).detach()
    assert (got.float() - exact).abs().max() < 0.05 * exact.abs().max()


def test_rows_round_to_within_half_a_step():
    w = torch.randn(16, 32) * torch.logspace(-3, 1, 16)[:, None]
    q, scale = quantize_rows(w)
    assert q.abs().max() == 127
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()


@pytest.fixture(scope="module")
def trained_dir(tiny_model_dir, seed_csv, tmp_path_factory):
    """The tiny model fine-tuned a little on the seed's jokes: peaked distributions, where
    rounding errors would show in the perplexity (a random model's are nearly flat)."""
    from tunesmith.data import load_training_examples
    from tunesmith.train import FinetuneConfig, finetune

    train, val = load_training_examples(seed_csv)
    config = FinetuneConfig(
        model=str(tiny_model_dir),
        data=str(seed_csv),
        batch_size=16,
        lr=3e-3,
        dropout=0.0,
        max_steps=20,
        report_samples=0,
        progress=False,
        device="cpu",
        precision="fp32",
    )
    out = tmp_path_factory.mktemp("trained")
    result = finetune(config, output_dir=out, train_texts=train[:320], val_texts=val[:16])
    return result.model_dir, val[:64]


def _perplexity(generator: TextGenerator, texts: list[str]) -> float:
    eos = generator.tokenizer.eos_id
    total, count = 0.0, 0
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([[eos, *generator.tokenizer.encode(text), eos]])
            logits = generator.model(ids[:, :-1]).float()
            total += float(F.cross_entropy(logits[0], ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
    return math.exp(total / count)


def test_int8_perplexity_within_one_percent_of_bfloat16(trained_dir):
    folder, val = trained_dir
    bf16 = TextGenerator.load(str(folder), device="cpu", dtype="bfloat16")
    int8 = TextGenerator.load(str(folder), device="cpu", dtype="bfloat16", quantize="int8")
    fp32 = TextGenerator.load(str(folder), device="cpu", dtype="float32")
    ppl_bf16, ppl_int8 = _perplexity(bf16, val), _perplexity(int8, val)
    assert _perplexity(fp32, val) < 10_000  # trained: the untrained model is near 50,000
    assert ppl_int8 == pytest.approx(ppl_bf16, rel=0.01)
    assert ppl_int8 != ppl_bf16  # the int8 weights really ran


def test_int8_model_holds_int8_weights_and_close_logits(trained_dir):
    folder, _ = trained_dir
    float_gen = tunesmith.load(str(folder), device="cpu", dtype="float32")
    int8_gen = tunesmith.load(str(folder), device="cpu", dtype="float32", quantize="int8")
    model = int8_gen.model
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert isinstance(model.lm_head, Int8Linear) and model.lm_head.qweight.dtype == torch.int8
    assert isinstance(model.transformer.wte, Int8Embedding)  # the head's int8 rows, shared
    assert model.transformer.wte.head[0] is model.lm_head
    float_bytes = sum(t.numel() * t.element_size() for t in float_gen.model.state_dict().values())
    int8_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert int8_bytes < 0.4 * float_bytes
    ids = torch.tensor([int8_gen.tokenizer.encode("Why did the chicken cross the road?")])
    with torch.inference_mode():
        expected, got = float_gen.model(ids), model(ids)
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    agree = (got.argmax(-1) == expected.argmax(-1)).float().mean()
    assert agree >= 0.8


def test_int8_generation_and_streaming(trained_dir):
    folder, _ = trained_dir
    generator = tunesmith.load(str(folder), device="cpu", quantize="int8")
    config = GenerationConfig(length=12, seed=3, ignore_eos=True)
    samples = generator.generate(["Why did", "I told my wife"], num_samples=2, config=config)
    assert [len(s.token_ids) for s in samples] == [12] * 4
    again = generator.generate(["Why did", "I told my wife"], num_samples=2, config=config)
    assert [s.text for s in again] == [s.text for s in samples]  # batched decoding is seeded
    assert "".join(generator.stream("Why did", config)) == samples[0].text


def test_unknown_quantization_is_a_usage_error(tiny_model_dir):
    with pytest.raises(UsageError, match="unknown quantization 'int4'"):
        tunesmith.load(str(tiny_model_dir), quantize="int4")


def test_cli_generate_quantize_int8(tiny_model_dir, workspace, capsys):
    from tunesmith.cli import main

    code = main(
        ["generate", "--model", str(tiny_model_dir), "--quantize", "int8", "--length", "6"]
        + ["--seed", "1", "--num-samples", "2", "--format", "jsonl", "--no-run"]
    )
    records = capsys.readouterr().out.splitlines()
    assert code == 0 and len(records) == 2


def _bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers, each storage counted once."""
    storages = {}
    for t in [*model.parameters(), *model.buffers()]:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


def test_quantizing_releases_each_float_weight_as_it_goes(tiny_model_dir, monkeypatch):
    import gc
    import weakref

    from tunesmith.checkpoint import load_checkpoint
    from tunesmith.quantize import quantize_model

    model, _, _ = load_checkpoint(tiny_model_dir, dtype=torch.float32)
    linears = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)}
    released = [weakref.ref(w) for w in linears.values()]  # the tied head and wte: one
    linear_bytes = sum(w.numel() * w.element_size() for w in linears.values())
    channels = sum(w.shape[0] for w in linears.values())
    others = _bytes(model) - linear_bytes  # position embedding, norms, biases: stay float
    del linears

    alive = []  # float weights still in memory as each layer is quantized
    real = Int8Linear.from_linear.__func__

    def counting(cls, linear, dtype):
        gc.collect()
        alive.append(sum(ref() is not None for ref in released))
        return real(cls, linear, dtype)

    monkeypatch.setattr(Int8Linear, "from_linear", classmethod(counting))
    quantize_model(model, "int8")
    gc.collect()
    # Only the layers not yet quantized hold float weights: never a float copy of the model
    # beside its int8 one.
    assert alive == list(range(len(released), 0, -1))
    assert all(ref() is None for ref in released)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    # What is left: a quarter of the float32 weights in int8, a float32 scale per output
    # channel, and the float tensors that were never linear weights; no float copy besides.
    assert _bytes(model) == linear_bytes // 4 + 4 * channels + others


def _maps(path) -> bool:
    """Whether this process has `path` memory-mapped."""
    return str(path.resolve()) in open("/proc/self/maps").read()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc")
def test_int8_loading_quantizes_straight_from_the_file(tiny_model_dir, tmp_path):
    import gc
    import shutil

    from tunesmith.checkpoint import load_checkpoint
    from tunesmith.quantize import quantize_model

    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")  # mapped by this test only
    weights = folder / "model.safetensors"
    # The weights as views of the mapped file, as the int8 loader reads them.
    mapped, _, _ = load_checkpoint(folder, dtype=None)
    assert _maps(weights)
    exact, _, _ = load_checkpoint(folder, dtype=torch.float32)
    ids = torch.tensor([[50256, 464, 3290, 318, 257]])
    with torch.inference_mode():
        torch.testing.assert_close(mapped(ids), exact(ids))  # transposed views: float order
        expected = quantize_model(exact, "int8")(ids)
    del mapped, exact
    gc.collect()
    assert not _maps(weights)  # quantizing left no view of the file behind

    # Loading int8 gives the same model as quantizing float32 weights in memory, and once
    # loaded nothing keeps the file mapped (a view left behind would hold all its pages).
    loaded = TextGenerator.load(str(folder), "cpu", "float32", quantize="int8")
    assert not _maps(weights)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(ids), expected, rtol=0, atol=0)
