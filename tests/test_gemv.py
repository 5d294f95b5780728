"""The batch-1 CPU kernels (gemv.c): the numbers of PyTorch's products, and a clean fallback."""

import pytest
import torch
import torch.nn.functional as F

from tunesmith import gemv
from tunesmith.model import GPT2, GPT2Config
from tunesmith.quantize import quantize_model

needs_kernels = pytest.mark.skipif(
    not gemv.enabled(), reason="no C compiler or no AVX-512 here: PyTorch's kernels run instead"
)


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """gemv's library looked up afresh, built into an empty cache (and forgotten after)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    gemv._library.cache_clear()
    gemv._bf16_kernel.cache_clear()
    yield tmp_path
    gemv._library.cache_clear()
    gemv._bf16_kernel.cache_clear()


SHAPES = [(2304, 768), (8, 16), (13, 40), (50, 3072)]  # N % 8 and K % 16 both exercised


needs_bf16_kernel = pytest.mark.skipif(
    not gemv._bf16_kernel(), reason="no AVX512-BF16 here: PyTorch's bfloat16 kernels run instead"
)


@needs_bf16_kernel
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 13, 16, 32])
@pytest.mark.parametrize("N, K", SHAPES)
def test_bf16_rows_match_pytorch(N, K, rows, threads, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    torch.manual_seed(N + K + rows)
    w, b = torch.randn(N, K).bfloat16(), torch.randn(N).bfloat16()
    x = torch.randn(rows, 1, K).bfloat16()
    y = gemv.gemm(x, w, b)
    reference = F.linear(x.double(), w.double(), b.double())
    assert y.shape == (rows, 1, N) and y.dtype == torch.bfloat16
    torch.testing.assert_close(  # bfloat16's own rounding of the result
        y.double(), reference, rtol=8e-3, atol=8e-3 * reference.abs().max()
    )


@needs_bf16_kernel
def test_a_rows_numbers_do_not_depend_on_the_rows_beside_it():
    torch.manual_seed(0)
    w, b = torch.randn(50257, 64).bfloat16(), torch.randn(50257).bfloat16()  # odd N: leftovers
    x = torch.randn(32, 64).bfloat16()
    together = gemv.gemm(x, w, b)
    for rows in (range(1), range(3, 5), range(7, 16), range(9, 32)):
        alone = gemv.gemm(x[rows.start : rows.stop], w, b)
        assert torch.equal(alone, together[rows.start : rows.stop])


@needs_kernels
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 11, 12, 13, 16, 24])
@pytest.mark.parametrize("N, K", SHAPES)
def test_float32_rows_match_pytorch(N, K, rows):
    torch.manual_seed(N + K + rows)
    w, b = torch.randn(N, K), torch.randn(N)
    x = torch.randn(1, rows, K)
    y = gemv.gemm(x, w, b)
    assert y.shape == (1, rows, N) and y.dtype == torch.float32
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-5, atol=1e-4)


@needs_kernels
def test_float32_rows_do_not_depend_on_the_rows_beside_them():
    torch.manual_seed(0)
    # 1005 weight rows: blocks of 4 for 3 rows and more, of 8 for 1-2, and different rows left
    # over for each; every row of x still gets the same sums.
    w = torch.randn(1005, 96)
    x = torch.randn(24, 96)
    together = gemv.gemm(x, w, None)
    for rows in (range(1), range(1, 3), range(4, 8), range(3, 16), range(5, 24)):
        alone = gemv.gemm(x[rows.start : rows.stop], w, None)
        assert torch.equal(alone, together[rows.start : rows.stop])


@needs_kernels
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activations", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 8, 16, 37, 64])
@pytest.mark.parametrize("N, K", SHAPES)
def test_int8_weights_match_their_dequantized_product(N, K, rows, activations, bias):
    torch.manual_seed(N * K + rows)
    q = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    scale = (torch.rand(N) / 100).to(activations)
    b = torch.randn(N).to(activations) if bias else None
    x = torch.randn(rows, K).to(activations)
    y = gemv.gemm_int8(x, q, scale, b)
    assert y.shape == (rows, N) and y.dtype == activations
    reference = x.double() @ (q.double() * scale.double()[:, None]).t()
    if bias:
        reference += b.double()
    tol = 1e-5 if activations == torch.float32 else 8e-3
    torch.testing.assert_close(y.double(), reference, rtol=tol, atol=tol * reference.abs().max())


def tiny_model(dtype):
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=500)
    return GPT2(config).eval().to(dtype)


@needs_kernels
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_decoding_one_sequence_gives_pytorch_kernels_logits(quantize, monkeypatch):
    model = quantize_model(tiny_model(torch.float32), quantize).to(torch.bfloat16)
    x = torch.randint(0, 500, (1, 12))

    def decode():
        cache = model.make_cache(1, 12)
        with torch.inference_mode():
            steps = [model(x[:, :4], 0, cache)]
            steps += [model(x[:, t : t + 1], t, cache) for t in range(4, 12)]
        return torch.cat(steps, dim=1).float()

    ours = decode()
    monkeypatch.setattr(gemv, "int8_rows_apply", lambda x, rows: False)  # PyTorch's throughout
    monkeypatch.setattr(gemv, "rows_apply", lambda x, rows: False)
    theirs = decode()
    assert (ours - theirs).abs().max() <= 0.05 * theirs.abs().max()  # bfloat16's rounding
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_without_a_compiler_pytorch_kernels_decode(fresh_library, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler")
    assert not gemv.enabled()
    model = tiny_model(torch.bfloat16)
    with torch.inference_mode():
        logits = model(torch.tensor([[1, 2, 3]]), 0, model.make_cache(1, 3))
    assert logits.shape == (1, 3, 500) and torch.isfinite(logits).all()
    assert not list(fresh_library.rglob("*.so"))


def test_the_switch_turns_the_kernels_off(fresh_library, monkeypatch):
    monkeypatch.setenv(gemv.DISABLE_ENV, "0")
    assert not gemv.enabled()
    assert not list(fresh_library.rglob("*.so"))  # not even built


@needs_kernels
def test_the_library_is_built_once_into_the_cache(fresh_library):
    assert gemv.enabled()
    built = list((fresh_library / "tunesmith" / "kernels").glob("gemv-*.so"))
    assert len(built) == 1 and not list(fresh_library.rglob(".*tmp*"))  # no leftovers
    mtime = built[0].stat().st_mtime_ns
    gemv._library.cache_clear()
    assert gemv.enabled() and built[0].stat().st_mtime_ns == mtime  # loaded, not rebuilt
