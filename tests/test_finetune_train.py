"""The training loop on tiny models: it learns, saves what transformers loads, resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.train import FinetuneConfig, finetune
from tunesmith.train import loop as loop_module
from tunesmith.train.resume_state import list_checkpoints

JOKES = [
    "I told my wife she was drawing her eyebrows too high. She looked surprised.",
    "I'm reading a book about anti-gravity. It's impossible to put down.",
    "Why don't skeletons fight each other? They don't have the guts.",
    "I used to be a banker, but I lost interest.",
    "I would tell you a UDP joke, but you might not get it.",
    "Parallel lines have so much in common. It's a shame they'll never meet.",
]


def _config(model_dir, **overrides) -> FinetuneConfig:
    values = dict(
        model=str(model_dir),
        data="(in memory)",
        batch_size=2,
        lr=3e-3,
        dropout=0.0,
        epochs=1,
        samples=0,
        report_samples=2,
        sample_tokens=8,
        progress=False,
    )
    return FinetuneConfig(**{**values, **overrides})


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_loss_falls_on_the_seed_csv(tiny_model_dir, seed_csv, tmp_path):
    from tunesmith.data import load_training_examples

    train, val = load_training_examples(seed_csv)
    cfg = _config(tiny_model_dir, data=str(seed_csv), batch_size=16, max_steps=25)
    result = finetune(cfg, output_dir=tmp_path, train_texts=train[:400], val_texts=val[:48])
    assert result.val_loss_after < result.val_loss_before - 0.5
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert len(losses) == 25 and sum(losses[-5:]) < sum(losses[:5])
    assert {"tokens_per_s", "lr", "grad_norm", "epoch"} <= set(records[1])
    assert (tmp_path / "loss.png").stat().st_size > 1000
    report = (tmp_path / "report.txt").read_text()
    assert "validation perplexity" in report and "copies of a training example" in report


def test_overfitting_one_batch_drives_loss_near_zero(tiny_model_dir, tmp_path):
    cfg = _config(
        tiny_model_dir,
        batch_size=2,
        lr=1e-2,
        max_steps=80,
        schedule="constant",
        max_grad_norm=0.0,
        report_samples=0,
    )
    finetune(cfg, output_dir=tmp_path, train_texts=JOKES[:2], val_texts=[])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert losses[0] > 5 and losses[-1] < 0.1


def test_saved_model_loads_in_transformers_with_identical_logits(tiny_model_dir, tmp_path):
    from transformers import GPT2LMHeadModel

    from tunesmith.checkpoint import load_checkpoint

    cfg = _config(tiny_model_dir, max_steps=3, lora=True, lora_targets=("c_attn", "c_fc"))
    result = finetune(cfg, output_dir=tmp_path, train_texts=JOKES, val_texts=JOKES[:2])
    folder = result.model_dir
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
        "finetune_config.json",
        "adapter/adapter_model.safetensors",
    ):
        assert (folder / name).is_file(), name
    ours, _, _ = load_checkpoint(folder)
    theirs = GPT2LMHeadModel.from_pretrained(folder).eval()
    x = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x).logits, rtol=1e-5, atol=1e-5)
    # LoRA trained something, and the merged weights differ from the base model's.
    base, _, _ = load_checkpoint(tiny_model_dir)
    assert not torch.equal(
        base.transformer.h[0].attn.c_attn.weight, ours.transformer.h[0].attn.c_attn.weight
    )
    assert torch.equal(base.transformer.wte.weight, ours.transformer.wte.weight)


class _Killed(KeyboardInterrupt):
    pass


def _interrupt_after(monkeypatch, step: int):
    """Make the loop die during step `step` + 1, as a kill between checkpoints would."""
    real = loop_module._step

    def step_or_die(t, indices, params, current):
        if current == step:
            raise _Killed()
        return real(t, indices, params, current)

    monkeypatch.setattr(loop_module, "_step", step_or_die)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_after_a_kill_equals_an_uninterrupted_run(
    tiny_model_dir, tmp_path, monkeypatch, lora
):
    common = dict(
        max_steps=9,
        save_every=2,
        eval_every=4,
        dropout=0.1,
        lora=lora,
        warmup=2,
        grad_accum=2,
        report_samples=0,
    )
    texts = JOKES * 4  # 6 steps per epoch: the resumed run crosses an epoch end
    whole = finetune(
        _config(tiny_model_dir, **common),
        output_dir=tmp_path / "whole",
        train_texts=texts,
        val_texts=JOKES[:2],
    )

    _interrupt_after(monkeypatch, 5)  # the last checkpoint is step 4
    with pytest.raises(_Killed):
        finetune(
            _config(tiny_model_dir, **common),
            output_dir=tmp_path / "killed",
            train_texts=texts,
            val_texts=JOKES[:2],
        )
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(tmp_path / "killed")] == [
        "step-0000002",
        "step-0000004",
    ]
    resumed = finetune(
        _config(tiny_model_dir, **common, resume=str(tmp_path / "killed")),
        output_dir=tmp_path / "resumed",
        train_texts=texts,
        val_texts=JOKES[:2],
    )
    a, b = _weights(whole.model_dir), _weights(resumed.model_dir)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert resumed.val_loss_after == pytest.approx(whole.val_loss_after, abs=1e-6)


def test_early_stop_keeps_the_best_weights(tiny_model_dir, tmp_path):
    # A huge learning rate makes validation loss rise after the first steps.
    cfg = _config(
        tiny_model_dir,
        lr=0.5,
        max_steps=40,
        eval_every=1,
        early_stop=2,
        report_samples=0,
        schedule="constant",
    )
    result = finetune(cfg, output_dir=tmp_path, train_texts=JOKES, val_texts=JOKES[:3])
    assert result.steps == 2  # two evaluations without improvement
    assert result.val_loss_after == result.val_loss_before  # step 0 was the best
    saved, base = _weights(result.model_dir), _weights(tiny_model_dir)
    assert all(torch.equal(saved[k], base[k]) for k in saved)
    last = list_checkpoints(tmp_path)[-1]
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["stopped_early"]
    # The model folder holds the best weights, the last checkpoint the last: nothing shared.
    assert state["weights"] == "tunesmith"
    assert (result.model_dir / "model.safetensors").stat().st_nlink == 1


def test_blocks_packing_trains_on_fixed_size_chunks(tiny_model_dir, tmp_path):
    cfg = _config(tiny_model_dir, packing="blocks", block_size=16, batch_size=2, max_steps=6)
    result = finetune(cfg, output_dir=tmp_path, train_texts=JOKES * 2, val_texts=JOKES[:2])
    assert result.val_loss_after < result.val_loss_before


def test_a_model_that_cannot_fit_says_what_would(tiny_model_dir, monkeypatch):
    from tunesmith.checkpoint import load_checkpoint
    from tunesmith.errors import UsageError
    from tunesmith.train import memory

    model, _, _ = load_checkpoint(tiny_model_dir)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10 * 1024**2)
    with pytest.raises(UsageError, match="--lora.*--gradient-checkpointing"):
        memory.check_memory(model, _config(tiny_model_dir), torch.device("cpu"), 128)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 64 * 1024**3)
    memory.check_memory(model, _config(tiny_model_dir), torch.device("cpu"), 128)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("compile_", [False, True], ids=["eager", "compile"])
def test_cuda_bf16_training(tiny_model_dir, tmp_path, compile_):
    cfg = _config(tiny_model_dir, device="cuda", max_steps=8, compile=compile_, batch_size=4)
    result = finetune(cfg, output_dir=tmp_path, train_texts=JOKES * 2, val_texts=JOKES[:2])
    assert result.val_loss_after < result.val_loss_before


def test_resume_after_sigkill_of_the_cli(tiny_model_dir, tmp_path):
    """A real kill -9 mid-run: the last checkpoint is whole and resuming it ends where an
    uninterrupted run ends."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "jokes.txt"
    data.write_text("\n".join(JOKES * 4) + "\n")
    args = [
        sys.executable,
        "-m",
        "tunesmith",
        "finetune",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--max-steps",
        "60",
        "--save-every",
        "3",
        "--batch-size",
        "2",
        "--report-samples",
        "0",
        "--no-progress",
        "--no-run",
        "--lr",
        "1e-3",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [*args, "--output-dir", str(tmp_path / "killed")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list_checkpoints(tmp_path / "killed") and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (tmp_path / "killed" / "model").exists():
        pytest.skip("the run finished before it could be killed")
    subprocess.run(
        [*args, "--output-dir", str(tmp_path / "whole")], env=env, check=True, capture_output=True
    )
    subprocess.run(
        [*args, "--output-dir", str(tmp_path / "resumed"), "--resume", str(tmp_path / "killed")],
        env=env,
        check=True,
        capture_output=True,
    )
    a = _weights(tmp_path / "whole" / "model")
    b = _weights(tmp_path / "resumed" / "model")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_finetune_returns_its_report_and_logs_progress_through_the_callback(
    tiny_model_dir, tmp_path, capsys
):
    cfg = _config(tiny_model_dir, max_steps=2, report_samples=1)
    lines: list[str] = []
    result = finetune(
        cfg, output_dir=tmp_path, train_texts=JOKES, val_texts=JOKES[:2], log=lines.append
    )
    assert result.report.startswith("Quality report")
    assert (tmp_path / "report.txt").read_text(encoding="utf-8") == result.report + "\n"
    assert lines[0].startswith(f"finetune {tiny_model_dir}: full fine-tune")
    assert any("val loss" in line for line in lines)
    assert capsys.readouterr().out == ""  # the library printed nothing itself
