"""The sampling functions: the right candidate sets, the right frequencies, seeded rows."""

from collections import Counter

import pytest
import torch

from tunesmith.sampling import _nucleus_threshold, apply_repetition_penalty, sample

LOGITS = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
PROBS = LOGITS.softmax(-1)[0]  # 0.636, 0.234, 0.086, 0.032, 0.012


def frequencies(logits, draws=4000, **kwargs):
    g = [torch.Generator().manual_seed(0)]
    counts = Counter(int(sample(logits, g, **kwargs)) for _ in range(draws))
    return {token: n / draws for token, n in counts.items()}


def test_plain_sampling_follows_the_softmax():
    freq = frequencies(LOGITS)
    for token, p in enumerate(PROBS.tolist()):
        assert abs(freq.get(token, 0) - p) < 0.03


def test_top_k_keeps_the_k_likeliest_renormalised():
    freq = frequencies(LOGITS, top_k=2)
    assert set(freq) == {0, 1}
    assert abs(freq[0] - PROBS[0] / PROBS[:2].sum()) < 0.03


@pytest.mark.parametrize("top_p, nucleus", [(0.5, {0}), (0.7, {0, 1}), (0.9, {0, 1, 2})])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, nucleus):
    assert set(frequencies(LOGITS, top_p=top_p, draws=1500)) == nucleus


def test_top_p_on_a_flat_distribution():
    vocab = 4096
    logits = -torch.arange(vocab, dtype=torch.float32)[None] * 1e-5  # nearly flat, ordered
    probs = logits.softmax(-1)[0]
    nucleus = int(((probs.cumsum(0) - probs) < 0.9).sum())
    freq = frequencies(logits, top_p=0.9, draws=3000)
    assert max(freq) < nucleus  # nothing outside the nucleus
    assert len(freq) > 1024  # but far into it


def test_top_p_draws_follow_the_renormalised_nucleus():
    freq = frequencies(LOGITS, top_p=0.7, draws=4000)
    assert set(freq) == {0, 1}
    assert abs(freq[0] - PROBS[0] / PROBS[:2].sum()) < 0.03


def test_a_nucleus_draws_rarely_land_in_is_drawn_from_directly():
    # top-p 0.01 of a flat vocabulary: a draw from the whole of it lands in the nucleus about
    # once in a hundred, so after DRAWS_BEFORE_THRESHOLD misses the nucleus is found instead.
    vocab = 4096
    logits = -torch.arange(vocab, dtype=torch.float32)[None] * 1e-5
    probs = logits.softmax(-1)[0]
    nucleus = int(((probs.cumsum(0) - probs) < 0.01).sum())
    freq = frequencies(logits, top_p=0.01, draws=500)
    assert max(freq) < nucleus
    assert len(freq) > nucleus // 2


@pytest.mark.parametrize("scale", [0.1, 1.0, 4.0, 20.0])
@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.99])
def test_nucleus_threshold_equals_the_sorted_definition(scale, top_p):
    torch.manual_seed(0)
    probs = (torch.randn(3, 50257) * scale).softmax(-1)
    ranked = probs.sort(dim=-1, descending=True).values
    kept = ((ranked.cumsum(-1) - ranked) < top_p).sum(-1, keepdim=True)
    assert torch.equal(_nucleus_threshold(probs, top_p), ranked.gather(-1, kept - 1))


def test_temperature_zero_is_argmax_and_low_temperature_sharpens():
    assert int(sample(LOGITS, [torch.Generator()], temperature=0)) == 0
    assert frequencies(LOGITS, temperature=0.2)[0] > 0.99


def test_each_row_uses_its_own_generator():
    batch = LOGITS.repeat(3, 1)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    together = [sample(batch, gens).tolist() for _ in range(20)]
    alone = []
    for s in (1, 2, 3):
        g = [torch.Generator().manual_seed(s)]
        alone.append([int(sample(LOGITS, g)) for _ in range(20)])
    assert [list(col) for col in zip(*together, strict=True)] == alone


def test_repetition_penalty_matches_ctrl_rule():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]]
