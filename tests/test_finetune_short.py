"""What a short fine-tune does besides training: the last checkpoint carries no optimizer
state (no step follows it) and is the very weights file of the model folder (written once),
and a run killed before its model was saved still finishes, from either checkpoint layout."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tunesmith.checkpoint import load_checkpoint, to_tunesmith_names
from tunesmith.train import FinetuneConfig, finetune
from tunesmith.train import loop as loop_module
from tunesmith.train.resume import resume_config
from tunesmith.train.resume_state import OPTIMIZER_FILE, STATE_FILE, list_checkpoints

JOKES = [
    "I told my wife she was drawing her eyebrows too high. She looked surprised.",
    "I'm reading a book about anti-gravity. It's impossible to put down.",
    "Why don't skeletons fight each other? They don't have the guts.",
    "I used to be a banker, but I lost interest.",
]


def _config(model_dir, **overrides) -> FinetuneConfig:
    values = dict(
        model=str(model_dir),
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
    return FinetuneConfig(**{**values, **overrides})


def _finetune(config, folder):
    return finetune(
        config, output_dir=folder, train_texts=JOKES * 2, val_texts=JOKES[:2], log=lambda _: None
    )


def _layout(checkpoint) -> str | None:
    return json.loads((checkpoint / STATE_FILE).read_text()).get("weights")


def _same_logits_in_transformers(folder) -> None:
    from transformers import GPT2LMHeadModel

    ours, _, _ = load_checkpoint(folder)
    theirs = GPT2LMHeadModel.from_pretrained(folder).eval()
    x = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x).logits, rtol=1e-5, atol=1e-5)


def _resume_without_a_step(folder, monkeypatch):
    """--resume of a run whose training had finished: it must not train again."""

    def no_step(*args):
        raise AssertionError("a finished run trained again on --resume")

    monkeypatch.setattr(loop_module, "_step", no_step)
    return _finetune(resume_config({"resume": str(folder)}), folder)


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):
    """A short full fine-tune's folder, its result, and a copy of its model's weights."""
    folder = tmp_path_factory.mktemp("finished")
    result = _finetune(_config(tiny_model_dir), folder)
    return folder, result, load_file(result.model_dir / "model.safetensors")


def test_the_final_weights_are_written_once_and_shared_by_the_model(finished):
    folder, result, _ = finished
    checkpoints = list_checkpoints(folder)
    assert [p.name for p in checkpoints] == ["step-0000002", "step-0000004"]
    assert (checkpoints[0] / OPTIMIZER_FILE).is_file()
    assert not (checkpoints[1] / OPTIMIZER_FILE).exists()
    assert result.report.count("\n") >= 3  # the samples, decoded in one batch
    # The last checkpoint holds the model folder's very file: one inode, two names.
    assert [_layout(p) for p in checkpoints] == ["tunesmith", "transformers"]
    model_file = result.model_dir / "model.safetensors"
    assert os.path.samefile(model_file, checkpoints[1] / "model.safetensors")
    assert model_file.stat().st_nlink == 2
    _same_logits_in_transformers(result.model_dir)


def test_removing_the_last_checkpoint_leaves_the_model_whole(tiny_model_dir, tmp_path):
    result = _finetune(_config(tiny_model_dir, report_samples=0), tmp_path)
    model_file = result.model_dir / "model.safetensors"
    saved = load_file(model_file)
    shutil.rmtree(tmp_path / "checkpoints")  # as a user (or a later prune) would
    assert model_file.stat().st_nlink == 1
    again = load_file(model_file)
    assert again.keys() == saved.keys() and all(torch.equal(again[k], saved[k]) for k in saved)
    _same_logits_in_transformers(result.model_dir)


def test_a_run_killed_before_its_model_was_saved_finishes_on_resume(
    finished, tmp_path, monkeypatch
):
    folder, result, saved = finished
    copy = shutil.copytree(folder, tmp_path / "run")
    shutil.rmtree(copy / "model")  # killed after its last step, before model/ was written
    resumed = _resume_without_a_step(copy, monkeypatch)
    assert resumed.steps == 4 and resumed.val_loss_after == result.val_loss_after
    again = load_file(resumed.model_dir / "model.safetensors")
    assert again.keys() == saved.keys() and all(torch.equal(again[k], saved[k]) for k in saved)
    last = list_checkpoints(copy)[-1] / "model.safetensors"
    assert os.path.samefile(resumed.model_dir / "model.safetensors", last)


def test_a_final_checkpoint_in_the_old_layout_still_resumes(finished, tmp_path, monkeypatch):
    folder, result, saved = finished
    copy = shutil.copytree(folder, tmp_path / "run")
    shutil.rmtree(copy / "model")
    # As tunesmith wrote it before: our names and layouts, no "weights" in trainer_state.
    last = list_checkpoints(copy)[-1]
    ours = {k: v.contiguous() for k, v in to_tunesmith_names(saved).items()}
    save_file(ours, last / "model.safetensors", metadata={"format": "pt"})
    state = json.loads((last / STATE_FILE).read_text())
    del state["weights"]
    (last / STATE_FILE).write_text(json.dumps(state))

    resumed = _resume_without_a_step(copy, monkeypatch)
    again = load_file(resumed.model_dir / "model.safetensors")
    assert again.keys() == saved.keys() and all(torch.equal(again[k], saved[k]) for k in saved)
    # Nothing to share with a checkpoint in our names: the model folder has its own file.
    assert not os.path.samefile(resumed.model_dir / "model.safetensors", last / "model.safetensors")
    _same_logits_in_transformers(resumed.model_dir)


def test_lora_keeps_adapter_only_checkpoints_and_its_own_model_file(tiny_model_dir, tmp_path):
    result = _finetune(_config(tiny_model_dir, lora=True, report_samples=0), tmp_path)
    last = list_checkpoints(tmp_path)[-1]
    assert _layout(last) == "tunesmith"
    assert all("lora" in k for k in load_file(last / "model.safetensors"))
    model_file = result.model_dir / "model.safetensors"
    assert model_file.stat().st_nlink == 1
    assert (result.model_dir / "adapter" / "adapter_model.safetensors").is_file()
    _same_logits_in_transformers(result.model_dir)
