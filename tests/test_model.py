"""Our GPT-2 against `transformers`' GPT2LMHeadModel, the reference implementation."""

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config as HFConfig
from transformers import GPT2LMHeadModel

from tunesmith.checkpoint import load_weights
from tunesmith.errors import ContextLengthError, UsageError
from tunesmith.model import GPT2, IGNORE_INDEX, GPT2Config

CONFIGS = [
    dict(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=300),
    dict(n_layer=3, n_head=2, n_embd=32, n_positions=48, vocab_size=97, n_inner=50),
    dict(
        n_layer=1,
        n_head=8,
        n_embd=128,
        n_positions=32,
        vocab_size=500,
        activation_function="relu",
        scale_attn_by_inverse_layer_idx=True,
        layer_norm_epsilon=1e-6,
    ),
]


def pair(hf_kwargs, seed=0):
    torch.manual_seed(seed)
    ref = GPT2LMHeadModel(HFConfig(**hf_kwargs)).eval()
    ours = GPT2(GPT2Config.from_hf(ref.config.to_dict())).eval()
    load_weights(ours, ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("hf_kwargs", CONFIGS)
def test_logits_match_transformers(hf_kwargs):
    ref, ours = pair(hf_kwargs)
    x = torch.randint(0, hf_kwargs["vocab_size"], (3, 20))
    with torch.no_grad():
        diff = (ref(x).logits - ours(x)).abs().max().item()
    assert diff <= 1e-4


@pytest.mark.parametrize("hf_kwargs", CONFIGS)
def test_cached_incremental_decoding_equals_full_forward(hf_kwargs):
    ref, ours = pair(hf_kwargs, seed=1)
    x = torch.randint(0, hf_kwargs["vocab_size"], (2, 16))
    with torch.no_grad():
        full = ref(x).logits
        cache = ours.make_cache(2, 16)
        parts = [ours(x[:, :7], 0, cache)]  # prefill
        parts += [ours(x[:, t : t + 1], t, cache) for t in range(7, 12)]  # one token at a time
        parts.append(ours(x[:, 12:], 12, cache))  # a chunk after that
    assert (torch.cat(parts, dim=1) - full).abs().max().item() <= 1e-4


def test_left_padded_batch_matches_unpadded_rows():
    ref, ours = pair(CONFIGS[0])
    short = torch.randint(0, 300, (1, 5))
    long = torch.randint(0, 300, (1, 9))
    batch = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1), long])
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :4] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batched = ours(batch, attention_mask=mask, position_ids=positions)
        alone = ref(short).logits
    assert (batched[0, 4:] - alone[0]).abs().max().item() <= 1e-4
    assert (batched[1] - ref(long).logits[0]).abs().max().item() <= 1e-4


def test_lm_head_is_tied_to_embeddings():
    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=8, vocab_size=11))
    assert model.lm_head.weight is model.transformer.wte.weight


def test_too_long_input_is_a_clear_error():
    _, ours = pair(CONFIGS[1])
    with pytest.raises(ContextLengthError, match="context of 48"):
        ours(torch.zeros(1, 49, dtype=torch.long))


def test_decoding_without_cache_names_the_fix():
    _, ours = pair(CONFIGS[1])
    with pytest.raises(UsageError, match="make_cache"):
        ours(torch.zeros(1, 1, dtype=torch.long), input_pos=5)


def _targets_with_padding(x: torch.Tensor) -> torch.Tensor:
    """Next-token targets of x, with the last position and a right-padded tail ignored."""
    targets = torch.full_like(x, IGNORE_INDEX)
    targets[:, :-1] = x[:, 1:]
    targets[0, 10:] = IGNORE_INDEX
    return targets


@pytest.mark.parametrize("hf_kwargs", CONFIGS[:2])
def test_loss_with_targets_matches_transformers_logits(hf_kwargs, monkeypatch):
    ref, ours = pair(hf_kwargs)
    x = torch.randint(0, hf_kwargs["vocab_size"], (2, 16))
    targets = _targets_with_padding(x)
    with torch.no_grad():
        logits = ref(x).logits.flatten(0, 1)
        expected = F.cross_entropy(logits, targets.flatten(), reduction="sum")
        selected = ours(x, targets=targets)
        # Under torch.compile the head runs on every position; ignore_index gives the same sum.
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        every_position = ours(x, targets=targets)
    assert abs(selected.item() - expected.item()) <= 1e-3
    assert abs(every_position.item() - expected.item()) <= 1e-3


def test_gradient_checkpointing_gives_the_same_gradients():
    _, ours = pair(CONFIGS[0])
    ours.train()  # checkpointing acts only in training; dropout zeroed to compare exactly
    for module in ours.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for module in ours.transformer.h:
        module.attn.attn_dropout = 0.0
    x = torch.randint(0, 300, (2, 16))
    grads = []
    for checkpointing in (False, True):
        ours.gradient_checkpointing = checkpointing
        ours.zero_grad()
        ours(x, targets=_targets_with_padding(x)).backward()
        grads.append([p.grad.clone() for p in ours.parameters()])
    for plain, checkpointed in zip(*grads, strict=True):
        assert torch.allclose(plain, checkpointed, atol=1e-6)


@pytest.mark.parametrize("hf_kwargs", CONFIGS[:2])
def test_one_pass_over_decoding_rows_and_new_prompts_gives_each_its_logits(hf_kwargs):
    """forward_groups: two sequences decoding their next token and two new prompts (one
    left-padded) in one pass give the last-position logits transformers gives each alone."""
    from tunesmith.model import Segment

    ref, ours = pair(hf_kwargs, seed=2)
    V = hf_kwargs["vocab_size"]
    old = torch.randint(0, V, (2, 9))
    new = [torch.randint(0, V, (5,)), torch.randint(0, V, (3,))]
    with torch.inference_mode():
        cache = ours.make_cache(2, 16)
        ours(old[:, :8], 0, cache)  # the running sequences' first 8 tokens
        idx = torch.zeros(2, 5, dtype=torch.long)
        mask = torch.zeros(2, 5, dtype=torch.long)
        for row, prompt in enumerate(new):
            idx[row, 5 - len(prompt) :], mask[row, 5 - len(prompt) :] = prompt, 1
        states = ours.forward_groups(
            [
                Segment(old[:, 8:], 8, cache),
                Segment(
                    idx,
                    0,
                    ours.make_cache(2, 5),
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                ),
            ]
        )
        logits = ours.lm_head(states)
        expected = [ref(old).logits[:, -1]] + [ref(p[None]).logits[:, -1] for p in new]
    assert logits.shape == (4, V)
    assert (logits - torch.cat(expected)).abs().max() <= 1e-4
