"""What a short fine-tune does besides training: the last checkpoint carries no optimizer
state (no step follows it), and a run killed before its model was saved still finishes."""

from __future__ import annotations

import shutil

import torch
from safetensors.torch import load_file

from tunesmith.train import FinetuneConfig, finetune
from tunesmith.train.resume import resume_config
from tunesmith.train.resume_state import OPTIMIZER_FILE, list_checkpoints

JOKES = [
    "I told my wife she was drawing her eyebrows too high. She looked surprised.",
    "I'm reading a book about anti-gravity. It's impossible to put down.",
    "Why don't skeletons fight each other? They don't have the guts.",
    "I used to be a banker, but I lost interest.",
]


def test_last_checkpoint_has_no_optimizer_state_and_still_finishes_a_resume(
    tiny_model_dir, tmp_path
):
    config = FinetuneConfig(
        model=str(tiny_model_dir),
        data="(in memory)",
        batch_size=2,
        lr=3e-3,
        max_steps=4,
        save_every=2,
        report_samples=3,
        sample_tokens=6,
        progress=False,
        device="cpu",
    )
    result = finetune(config, output_dir=tmp_path, train_texts=JOKES * 2, val_texts=JOKES[:2])
    checkpoints = list_checkpoints(tmp_path)
    assert [p.name for p in checkpoints] == ["step-0000002", "step-0000004"]
    assert (checkpoints[0] / OPTIMIZER_FILE).is_file()
    assert not (checkpoints[1] / OPTIMIZER_FILE).exists()
    assert result.report.count("\n") >= 3  # the samples, decoded in one batch

    # Killed after training, before runs/N/model was written: --resume only finishes it.
    saved = load_file(result.model_dir / "model.safetensors")
    shutil.rmtree(result.model_dir)
    resumed = finetune(
        resume_config({"resume": str(tmp_path)}),
        output_dir=tmp_path,
        train_texts=JOKES * 2,
        val_texts=JOKES[:2],
        log=lambda line: None,
    )
    assert resumed.steps == 4 and resumed.val_loss_after == result.val_loss_after
    again = load_file(resumed.model_dir / "model.safetensors")
    assert all(torch.equal(again[k], saved[k]) for k in saved)
