"""--precision auto: bf16 autocast (fp32 master weights) where the hardware computes bf16, and the
same validation loss as fp32."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith import devices
from tunesmith.train import FinetuneConfig, finetune


def _finetune(model_dir, seed_csv, out, precision: str):
    from tunesmith.data import load_training_examples

    train, val = load_training_examples(seed_csv)
    config = FinetuneConfig(
        model=str(model_dir),
        data=str(seed_csv),
        precision=precision,
        batch_size=16,
        lr=3e-3,
        dropout=0.0,
        max_steps=30,
        report_samples=0,
        progress=False,
        device="cpu",
    )
    return finetune(config, output_dir=out, train_texts=train[:480], val_texts=val[:64])


def test_auto_trains_in_bf16_where_native_and_matches_fp32(
    tiny_model_dir, seed_csv, tmp_path, monkeypatch
):
    # Without native bf16 this CPU would pick fp32; force the bf16 path so the test checks it.
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(devices, "cpu_trains_faster_in_bf16", lambda: True)
    autocasts = []
    real_autocast = torch.autocast

    def spy(*args, **kwargs):
        if kwargs.get("enabled", True):
            autocasts.append(kwargs.get("dtype"))
        return real_autocast(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    auto = _finetune(tiny_model_dir, seed_csv, tmp_path / "auto", "auto")
    assert autocasts and set(autocasts) == {torch.bfloat16}
    autocasts.clear()
    fp32 = _finetune(tiny_model_dir, seed_csv, tmp_path / "fp32", "fp32")
    assert not autocasts

    assert auto.metrics["precision"] == "bf16 autocast" and fp32.metrics["precision"] == "fp32"
    assert auto.val_loss_after < auto.val_loss_before - 0.5  # it trained
    assert auto.val_loss_after == pytest.approx(fp32.val_loss_after, rel=0.01)
    assert auto.val_loss_after != fp32.val_loss_after  # bf16 really ran
    saved = json.loads((tmp_path / "auto" / "model" / "finetune_config.json").read_text())
    assert saved["precision"] == "auto"
    # The weights stay fp32 masters: the saved model is float32.
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "auto" / "model" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}


def test_auto_is_fp32_without_native_bf16(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert not devices.use_bf16_autocast("auto", torch.device("cpu"))
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(devices, "cpu_trains_faster_in_bf16", lambda: True)
    assert devices.use_bf16_autocast("auto", torch.device("cpu"))
    monkeypatch.setattr(devices, "cpu_trains_faster_in_bf16", lambda: False)
    assert not devices.use_bf16_autocast("auto", torch.device("cpu"))
