"""LoRA invariants: starts as the base model, trains only adapters, merges exactly, once."""

import pytest
import torch

from tunesmith.model import GPT2, GPT2Config
from tunesmith.train.lora import (
    LoRALinear,
    apply_lora,
    load_adapter,
    lora_layers,
    merge_lora,
    save_adapter,
    unwrap_lora,
)

TINY = GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4)


def _model(seed=0):
    torch.manual_seed(seed)
    m = GPT2(TINY).eval()
    for module in m.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for block in m.transformer.h:
        block.attn.attn_dropout = 0.0
    return m


def _wrapped(seed=0, targets=("c_attn", "attn.c_proj", "c_fc", "mlp.c_proj")):
    m = _model(seed)
    apply_lora(m, rank=4, alpha=8, dropout=0.0, targets=targets)
    return m


def _randomize_adapters(m):
    with torch.no_grad():
        for layer in lora_layers(m).values():
            layer.lora_B.normal_(std=0.1)


def test_starts_as_the_base_model_and_only_adapters_train():
    base, m = _model(), _wrapped()
    x = torch.randint(0, 100, (2, 10))
    assert torch.equal(base(x), m(x))
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert len(lora_layers(m)) == 8


def test_training_leaves_base_weights_unchanged():
    m = _wrapped()
    before = {n: p.clone() for n, p in m.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randint(0, 100, (2, 10))
    for _ in range(3):
        m.train()
        loss = torch.nn.functional.cross_entropy(m(x)[:, :-1].reshape(-1, 100), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
    for n, p in m.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), n
    assert any(layer.lora_B.abs().sum() > 0 for layer in lora_layers(m).values())


def test_merge_equals_adapter_forward_and_twice_is_a_no_op():
    m = _wrapped()
    _randomize_adapters(m)
    x = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        with_adapters = m(x)
        merge_lora(m)
        merged = m(x)
        weights = {n: p.clone() for n, p in m.named_parameters()}
        merge_lora(m)
        again = m(x)
    torch.testing.assert_close(merged, with_adapters, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, merged)
    for n, p in m.named_parameters():
        assert torch.equal(p, weights[n])


def test_unwrap_gives_a_plain_gpt2_with_the_same_outputs():
    m = _wrapped()
    _randomize_adapters(m)
    x = torch.randint(0, 100, (1, 8))
    with torch.no_grad():
        expected = m(x)
        plain = unwrap_lora(m)
        assert not lora_layers(plain)
        assert set(plain.state_dict()) == set(_model().state_dict())
        torch.testing.assert_close(plain(x), expected, rtol=1e-5, atol=1e-5)


def test_adapter_saves_and_loads_alone(tmp_path):
    m = _wrapped(targets=("c_attn",))
    _randomize_adapters(m)
    folder = save_adapter(m, tmp_path / "adapter", {"rank": 4})
    assert (folder / "adapter_model.safetensors").stat().st_size < 100_000
    fresh = _wrapped(targets=("c_attn",))
    load_adapter(fresh, folder)
    x = torch.randint(0, 100, (1, 8))
    with torch.no_grad():
        assert torch.equal(fresh(x), m(x))


def test_adapter_of_other_targets_is_refused(tmp_path):
    from tunesmith.errors import CheckpointError

    m = _wrapped(targets=("c_attn",))
    save_adapter(m, tmp_path / "a", {})
    with pytest.raises(CheckpointError, match="same --lora-targets"):
        load_adapter(_wrapped(targets=("c_fc",)), tmp_path / "a")


def test_lora_linear_matches_base_weight_shape():
    base = torch.nn.Linear(6, 9)
    layer = LoRALinear(base, rank=2, alpha=4)
    assert layer.delta_weight().shape == base.weight.shape
    assert not base.weight.requires_grad
