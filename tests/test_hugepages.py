"""Moving a model's weights into huge pages (hugepages.py): the same model afterwards."""

import pytest
import torch

from tunesmith import hugepages
from tunesmith.model import GPT2, GPT2Config


def model_with_a_large_embedding() -> GPT2:
    torch.manual_seed(0)
    # The tied embedding / LM head (10,000 x 64 float32) is past a huge page; the rest is not.
    config = GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=32, vocab_size=10_000)
    return GPT2(config).eval()


def logits(model: GPT2) -> torch.Tensor:
    x = torch.arange(8)[None] * 97
    with torch.inference_mode():
        return model(x, 0, model.make_cache(1, 8))


@pytest.mark.skipif(not hugepages.available(), reason="no transparent huge pages here")
def test_moved_weights_give_the_same_model_with_ties_kept():
    model = model_with_a_large_embedding()
    before, state = logits(model), {k: v.clone() for k, v in model.state_dict().items()}
    head = model.lm_head.weight
    assert head.nbytes >= hugepages.HUGE_PAGE
    moved = hugepages.move_weights(model)
    assert moved >= head.nbytes
    assert model.lm_head.weight.data_ptr() != state["lm_head.weight"].data_ptr()
    assert model.lm_head.weight is model.transformer.wte.weight  # still one tensor
    assert model.lm_head.weight.data_ptr() % hugepages.HUGE_PAGE == 0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(logits(model), before)
    assert hugepages.move_weights(model) == 0  # moved once


def test_without_huge_pages_nothing_moves(tmp_path, monkeypatch):
    setting = tmp_path / "enabled"
    setting.write_text("always madvise [never]\n")
    monkeypatch.setattr(hugepages, "THP_SETTING", setting)
    model = model_with_a_large_embedding()
    where = model.lm_head.weight.data_ptr()
    assert not hugepages.available()
    assert hugepages.move_weights(model) == 0
    assert model.lm_head.weight.data_ptr() == where
    monkeypatch.setattr(hugepages, "THP_SETTING", tmp_path / "missing")
    assert not hugepages.available()
