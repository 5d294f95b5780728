"""Training's fused CPU kernels (fused.c): PyTorch's numbers, dropout's distribution."""

import pytest
import torch
import torch.nn.functional as F

from tunesmith import fused
from tunesmith.model import GPT2, GPT2Config
from tunesmith.sampling import sample

needs_kernels = pytest.mark.skipif(
    not fused.enabled(), reason="no C compiler or no AVX-512 here: PyTorch's ops run instead"
)


@pytest.fixture
def pytorch_ops(monkeypatch):
    """Turn the fused kernels off: what a machine without them runs."""
    monkeypatch.setattr(fused, "_library", lambda: None)


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("N, V", [(1, 17), (7, 16), (33, 1000), (64, 50257)])
def test_cross_entropy_and_its_gradients_match_float64(N, V, threads, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    torch.manual_seed(N + V)
    h, weight = torch.randn(N, 48, dtype=torch.float64), torch.randn(V, 48, dtype=torch.float64)
    targets = torch.randint(0, V, (N,))
    ref_h, ref_w = h.clone().requires_grad_(), weight.clone().requires_grad_()
    ref = F.cross_entropy(ref_h @ ref_w.t(), targets, reduction="sum")
    (ref * 3).backward()
    ours_h, ours_w = h.float().requires_grad_(), weight.float().requires_grad_()
    ours = fused.head_cross_entropy(ours_h, ours_w, targets)
    (ours * 3).backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(ours_h.grad.double(), ref_h.grad, rtol=1e-4, atol=1e-4)
    assert torch.allclose(ours_w.grad.double(), ref_w.grad, rtol=1e-4, atol=1e-4)


@needs_kernels
def test_extreme_logits_give_the_loss_pytorch_gives():
    h = torch.tensor([[1.0], [1.0]])
    weight = torch.tensor([[0.0], [200.0], [-300.0]])  # probabilities down to e^-500
    targets = torch.tensor([2, 0])
    ours = fused.head_cross_entropy(h, weight, targets)
    ref = F.cross_entropy(h @ weight.t(), targets, reduction="sum")
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)  # 500 + 200, not inf


@needs_kernels
def test_a_nan_logit_makes_the_loss_nan():
    h = torch.tensor([[1.0]])
    weight = torch.tensor([[0.0], [float("nan")], [1.0]])
    assert torch.isnan(fused.head_cross_entropy(h, weight, torch.tensor([0])))


@needs_kernels
def test_a_target_outside_the_vocabulary_is_an_error():
    with pytest.raises(IndexError, match="outside the vocabulary"):
        fused.head_cross_entropy(torch.randn(2, 4), torch.randn(10, 4), torch.tensor([3, 10]))


def tiny_model(dropout: float) -> GPT2:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    config.resid_pdrop = config.embd_pdrop = dropout
    config.attn_pdrop = 0.0
    return GPT2(config).train()


def loss_and_grads(model: GPT2, seed: int = 1):
    torch.manual_seed(seed)
    idx = torch.randint(0, 300, (3, 20))
    targets = idx.roll(-1, dims=1)
    targets[:, -1] = -100
    targets[2, 12:] = -100  # a padded sequence
    model.zero_grad()
    loss = model(idx, targets=targets)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@needs_kernels
def test_the_model_trains_on_the_same_loss_and_gradients_as_with_pytorch_ops(monkeypatch):
    model = tiny_model(dropout=0.0)
    loss, grads = loss_and_grads(model)
    monkeypatch.setattr(fused, "_library", lambda: None)
    ref_loss, ref_grads = loss_and_grads(model)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for name, grad in grads.items():
        assert torch.allclose(grad, ref_grads[name], rtol=1e-4, atol=1e-6), name


@needs_kernels
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_each_element_with_probability_1_minus_p_and_scales_it(p):
    torch.manual_seed(0)
    x = torch.rand(512, 777) + 0.5  # no zeros of its own
    y = fused.Dropout(p).train()(x)
    kept = y != 0
    n = x.numel()
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(kept.sum().item() - n * (1 - p)) < 5 * sd
    assert torch.allclose(y[kept], x[kept] / (1 - p))
    # No pattern by position: every vector lane, every row and column keeps about as often.
    lanes = kept.flatten()[: n // 16 * 16].view(-1, 16).float().mean(0)
    assert (lanes - (1 - p)).abs().max() < 0.01
    assert (kept.float().mean(1) - (1 - p)).abs().max() < 5 * (p * (1 - p) / 777) ** 0.5
    assert (kept.float().mean(0) - (1 - p)).abs().max() < 5 * (p * (1 - p) / 512) ** 0.5


@needs_kernels
def test_dropout_backward_uses_the_forward_mask():
    x = torch.randn(100, 300, requires_grad=True)
    y = fused.Dropout(0.3).train()(x)
    grad = torch.randn_like(y)
    y.backward(grad)
    kept = y != 0
    assert torch.equal(x.grad != 0, kept)
    assert torch.allclose(x.grad[kept], grad[kept] / 0.7)


@needs_kernels
def test_dropout_masks_follow_torch_seed_and_not_the_threads(monkeypatch):
    x = torch.randn(64, 1000)
    drop = fused.Dropout(0.1).train()
    torch.manual_seed(5)
    first, second = drop(x), drop(x)
    assert not torch.equal(first != 0, second != 0)  # each call its own mask
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    torch.manual_seed(5)
    assert torch.equal(drop(x), first)


def test_dropout_is_the_identity_in_eval_and_at_p_0():
    x = torch.randn(10, 20)
    assert torch.equal(fused.Dropout(0.1).eval()(x), x)
    assert torch.equal(fused.Dropout(0.0).train()(x), x)


@needs_kernels
def test_gradient_checkpointing_redraws_the_same_dropout_masks():
    model = tiny_model(dropout=0.2)
    loss, grads = loss_and_grads(model)
    model.gradient_checkpointing = True
    loss_again, grads_again = loss_and_grads(model)
    assert loss_again == loss
    for name, grad in grads.items():
        assert torch.allclose(grad, grads_again[name], rtol=1e-5, atol=1e-7), name


def test_without_the_kernels_pytorch_ops_train(pytorch_ops):
    model = tiny_model(dropout=0.1)
    loss, grads = loss_and_grads(model)
    assert loss > 0 and all(torch.isfinite(g).all() for g in grads.values())
    x = torch.ones(1000)
    kept = fused.Dropout(0.5).train()(x) != 0
    assert 350 < kept.sum() < 650


@needs_kernels
def test_under_bf16_autocast_pytorch_ops_run():
    model = tiny_model(dropout=0.1)
    h = torch.randn(4, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused.takes_head(h, model.lm_head)
        loss = model(torch.randint(0, 300, (2, 8)), targets=torch.randint(0, 300, (2, 8)))
    assert torch.isfinite(loss)
    assert fused.takes_head(h, model.lm_head)


@needs_kernels
@pytest.mark.parametrize("n", [40000, 32768 * 3 + 5])
def test_gelu_and_its_gradient_match_pytorch(n):
    torch.manual_seed(n)
    x = (torch.randn(n) * 4).requires_grad_()  # out to where tanh saturates
    x.data[:4] = torch.tensor([0.0, -60.0, 60.0, 1e-4])
    ours = fused.gelu_tanh(x)
    grad = torch.randn(n)
    ours.backward(grad)
    ref_x = x.detach().double().requires_grad_()
    ref = F.gelu(ref_x, approximate="tanh")
    ref.backward(grad.double())
    assert torch.allclose(ours.double(), ref, rtol=1e-5, atol=1e-6)
    # PyTorch's own float32 gradient is 3e-6 off here.
    assert torch.allclose(x.grad.double(), ref_x.grad, rtol=1e-5, atol=1e-5)


def cached_attention_inputs(dtype, B=3, H=4, S=37, D=40):
    """A query per sequence and cached keys/values, strided as the model's are."""
    torch.manual_seed(S)
    q = torch.randn(B, 1, 3, H, D, dtype=dtype)[:, :, 0].transpose(1, 2)  # (B, H, 1, D)
    cache = torch.randn(2, B, H, S + 20, D, dtype=dtype)
    return q, cache[0][:, :, :S], cache[1][:, :, :S]


@needs_kernels
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("padded", [False, True])
def test_decode_attention_matches_pytorch(dtype, tolerance, padded):
    q, k, v = cached_attention_inputs(dtype)
    B, H, S, D = k.shape
    keys = torch.ones(B, S, dtype=torch.bool)
    if padded:
        keys[0, :10] = False  # left padding
        keys[2, :-1] = False  # a row that sees only its own position
    with torch.inference_mode():
        assert fused.takes_decode_attention(q, k, v)
        ours = fused.decode_attention(q, k, v, keys if padded else None, 0.3)
    ref = F.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), attn_mask=keys[:, None, None, :], scale=0.3
    )
    ref = ref.transpose(1, 2).reshape(B, 1, H * D)
    assert ours.dtype == dtype and ours.shape == (B, 1, H * D)
    assert (ours.double() - ref).abs().max() < tolerance


def test_decode_attention_is_for_decoding_only():
    q, k, v = cached_attention_inputs(torch.float32)
    assert not fused.takes_decode_attention(q, k, v)  # autograd on: training's path
    with torch.inference_mode():
        q2, k2, v2 = cached_attention_inputs(torch.float16)
        assert not fused.takes_decode_attention(q2, k2, v2)
        prompt = torch.randn(3, 4, 5, 40)  # several queries: a prefill
        assert not fused.takes_decode_attention(prompt, k, v)


@needs_kernels
def test_a_model_decodes_the_same_with_and_without_the_kernels(monkeypatch):
    model = tiny_model(dropout=0.1).eval()
    idx = torch.randint(0, 300, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0  # a left-padded prompt

    def decode():
        cache = model.make_cache(2, 10)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = [model(idx, 0, cache, attention_mask=mask, position_ids=positions)[:, -1]]
            full = torch.cat([mask, torch.ones(2, 4, dtype=torch.long)], 1)
            for step in range(4):
                token = out[-1].argmax(-1, keepdim=True)
                pos = positions[:, -1:] + step + 1
                logits = model(
                    token, 6 + step, cache, attention_mask=full[:, : 7 + step], position_ids=pos
                )
                out.append(logits[:, -1])
        return torch.stack(out)

    ours = decode()
    monkeypatch.setattr(fused, "_library", lambda: None)
    assert torch.allclose(ours, decode(), atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("vocab", [5, 37, 50257])
def test_gumbel_draws_follow_the_softmax(vocab):
    torch.manual_seed(vocab)
    logits = torch.randn(vocab) * 2
    logits[3] = logits.max() + 1.0  # a clear favourite
    logits[1] = float("-inf")  # ruled out (a logit bias of -inf)
    probs = logits.softmax(-1)
    g = torch.Generator().manual_seed(0)
    draws = 3000
    picks = torch.tensor([fused.gumbel_pick(logits, g) for _ in range(draws)])
    assert not (picks == 1).any()
    counts = torch.bincount(picks, minlength=vocab).double()
    top = probs.topk(3).indices
    for token in top.tolist():
        p = float(probs[token])
        assert abs(counts[token] / draws - p) < 4 * (p * (1 - p) / draws) ** 0.5 + 1e-3


@needs_kernels
def test_gumbel_draws_outside_the_nucleus_are_refused_and_seeded():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])  # probabilities 0.64, 0.23, 0.09, ...
    g = torch.Generator().manual_seed(0)
    picks = [fused.gumbel_pick(logits, g, top_p=0.7) for _ in range(2000)]
    assert set(picks) == {0, 1, None}  # 2 and beyond are outside a nucleus of 0.7
    assert abs(picks.count(None) / 2000 - float(logits.softmax(-1)[2:].sum())) < 0.03
    again = torch.Generator().manual_seed(0)
    assert [fused.gumbel_pick(logits, again, top_p=0.7) for _ in range(2000)] == picks


@needs_kernels
@pytest.mark.parametrize("top_p", [1.0, 0.7])
def test_a_batch_of_rows_draws_what_each_row_draws_alone(top_p):
    torch.manual_seed(1)
    logits = torch.randn(12, 3, 50) * 3  # rows strided, as a model's last positions are
    rows = logits[:, -1]
    together = [torch.Generator().manual_seed(seed) for seed in range(12)]
    alone = [torch.Generator().manual_seed(seed) for seed in range(12)]
    drawn = []
    for _ in range(20):
        picks = fused.gumbel_picks(rows, together, top_p)
        assert picks == [
            fused.gumbel_pick(rows[i].contiguous(), alone[i], top_p) for i in range(12)
        ]
        drawn += picks
    assert all(p is None or 0 <= p < 50 for p in drawn)
    assert (None in drawn) == (top_p < 1)  # refusals, row by row, only under top-p


@needs_kernels
def test_sampling_a_batch_gives_each_row_its_own_draws():
    torch.manual_seed(2)
    logits = torch.randn(9, 500)
    for top_p in (1.0, 0.5, 0.05):  # 0.05: draws mostly miss, the nucleus is found instead
        together = sample(
            logits, [torch.Generator().manual_seed(s) for s in range(9)], 1.0, 0, top_p
        )
        alone = [
            int(sample(logits[i : i + 1], [torch.Generator().manual_seed(i)], 1.0, 0, top_p)[0])
            for i in range(9)
        ]
        assert together.tolist() == alone


@needs_kernels
def test_a_token_that_holds_all_the_mass_is_always_drawn():
    # Noise from a draw of exactly u = 1 is +inf: 24-bit draws rounded to 1 about once in
    # 2^24 tokens, which over GPT-2's vocabulary sent one sample in 330 to a random token.
    torch.manual_seed(3)
    logits = torch.randn(64, 50257) * 3
    logits[:, 262] += 100
    generators = [torch.Generator().manual_seed(seed) for seed in range(64)]
    picks = [p for _ in range(40) for p in fused.gumbel_picks(logits, generators)]
    assert picks == [262] * len(picks)
