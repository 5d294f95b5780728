"""The model's Linear: the same numbers as nn.Linear on every path it takes."""

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config as HFConfig
from transformers import GPT2LMHeadModel

from tunesmith.checkpoint import load_weights
from tunesmith.linear import TRANSPOSED_PRODUCT_ROWS, Linear
from tunesmith.model import GPT2, GPT2Config


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 48), (12, 48), (3, 4, 48), (2, 100, 48), (400, 48)])
def test_inference_output_equals_f_linear(shape, bias):
    torch.manual_seed(0)
    layer = Linear(48, 80, bias=bias)
    x = torch.randn(*shape)
    with torch.inference_mode():
        y = layer(x)
    assert y.shape == (*shape[:-1], 80)
    torch.testing.assert_close(y, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_the_transposed_product_covers_a_decoding_batch_only():
    # The rows of a decoding batch (8 sequences and up) take it; one sequence and training's
    # thousands of rows do not.
    assert 1 not in TRANSPOSED_PRODUCT_ROWS and 7 not in TRANSPOSED_PRODUCT_ROWS
    assert 8 in TRANSPOSED_PRODUCT_ROWS and 16 in TRANSPOSED_PRODUCT_ROWS
    assert 2048 not in TRANSPOSED_PRODUCT_ROWS


def test_training_gradients_are_nn_linears():
    torch.manual_seed(0)
    ours, reference = Linear(16, 8), torch.nn.Linear(16, 8)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(12, 16)
    ours(x).square().sum().backward()
    reference(x).square().sum().backward()
    assert torch.equal(ours.weight.grad, reference.weight.grad)
    assert torch.equal(ours.bias.grad, reference.bias.grad)


def test_a_decoding_batch_of_twelve_matches_transformers():
    torch.manual_seed(0)
    hf = dict(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=300)
    ref = GPT2LMHeadModel(HFConfig(**hf)).eval()
    ours = GPT2(GPT2Config.from_hf(ref.config.to_dict())).eval()
    load_weights(ours, ref.state_dict())
    x = torch.randint(0, 300, (12, 10))
    with torch.inference_mode():
        full = ref(x).logits
        cache = ours.make_cache(12, 10)
        steps = [ours(x[:, :4], 0, cache)]  # 48 rows, then 12 a step
        steps += [ours(x[:, t : t + 1], t, cache) for t in range(4, 10)]
    assert (torch.cat(steps, dim=1) - full).abs().max().item() <= 1e-4
