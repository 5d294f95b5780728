"""Finding and loading checkpoints: hub ids (offline cache), folders, formats, and errors."""

import json

import pytest
import torch
from conftest import write_tiny_hf_model
from transformers import GPT2LMHeadModel

from tunesmith.checkpoint import load_checkpoint, resolve_model_dir, save_checkpoint
from tunesmith.cli import main
from tunesmith.errors import CheckpointError, ModelNotFoundError


def reference_logits(folder, x):
    with torch.no_grad():
        return GPT2LMHeadModel.from_pretrained(folder).eval()(x).logits


def our_logits(source, x):
    model, _, _ = load_checkpoint(source)
    with torch.no_grad():
        return model(x)


X = torch.randint(0, 50257, (2, 12))


@pytest.mark.parametrize("name", ["gpt2", "openai-community/gpt2"])
def test_hub_id_resolves_through_offline_cache(offline_hub, tiny_model_dir, name):
    folder = resolve_model_dir(name)
    assert str(folder).startswith(str(offline_hub))
    assert (our_logits(name, X) - reference_logits(tiny_model_dir, X)).abs().max() <= 1e-4


def test_cached_model_loads_without_asking_the_network(offline_hub, monkeypatch):
    import huggingface_hub

    real, calls = huggingface_hub.hf_hub_download, []

    def recording(*args, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        return real(*args, **kwargs)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", recording)
    assert (resolve_model_dir("gpt2") / "model.safetensors").is_file()
    assert calls and all(calls)  # every file came from the cache


def test_unknown_hub_id_offline_says_what_to_do(offline_hub):
    with pytest.raises(ModelNotFoundError, match="not in the cache.*local model folder"):
        resolve_model_dir("no-such-user/no-such-model")


def test_pytorch_bin_weights_load_safely(tmp_path):
    reference = write_tiny_hf_model(tmp_path / "safetensors", seed=3)
    folder = write_tiny_hf_model(tmp_path / "bin", seed=3, safe=False)
    assert (folder / "pytorch_model.bin").exists()
    assert not (folder / "model.safetensors").exists()
    assert (our_logits(folder, X) - reference_logits(reference, X)).abs().max() <= 1e-4


def test_pickle_with_code_is_refused(tmp_path):
    folder = write_tiny_hf_model(tmp_path / "evil", seed=3)
    (folder / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safely"):
        load_checkpoint(folder)


def test_sharded_safetensors(tmp_path):
    torch.manual_seed(0)
    src = write_tiny_hf_model(tmp_path / "one", seed=4)
    ref = GPT2LMHeadModel.from_pretrained(src)
    sharded = tmp_path / "sharded"
    ref.save_pretrained(sharded, max_shard_size="1MB")
    for f in ("vocab.json", "merges.txt"):
        (sharded / f).write_bytes((src / f).read_bytes())
    assert (sharded / "model.safetensors.index.json").exists()
    assert (our_logits(sharded, X) - reference_logits(src, X)).abs().max() <= 1e-4


def test_folder_without_weights(tmp_path):
    folder = write_tiny_hf_model(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_checkpoint(folder)


def test_other_architecture_is_refused(tmp_path):
    folder = write_tiny_hf_model(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model_type 'llama'"):
        load_checkpoint(folder)


def test_saved_folder_loads_in_transformers_with_identical_logits(tiny_model_dir, tmp_path):
    model, tokenizer, _ = load_checkpoint(tiny_model_dir)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.add_(0.01)  # make it differ from the source
        ours = model(X)
    save_checkpoint(model, tokenizer, tmp_path / "out")
    assert (reference_logits(tmp_path / "out", X) - ours).abs().max() <= 1e-4
    assert (our_logits(tmp_path / "out", X) - ours).abs().max() == 0
    assert (tmp_path / "out" / "model.safetensors").stat().st_mode & 0o044  # others may read it


@pytest.mark.parametrize(
    "model, message",
    [
        ("./missing-folder", "does not exist"),
        ("not/a/valid/hub/id", "does not exist"),
        ("missing-model", "not in the cache"),
    ],
)
def test_cli_model_errors_are_one_line(offline_hub, workspace, capsys, model, message):
    code = main(["generate", "--model", model, "--no-run"])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_config_of_other_architecture(tmp_path, capsys):
    folder = write_tiny_hf_model(tmp_path / "m")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert main(["generate", "--model", str(folder), "--no-run"]) == 1
    assert "model_type 'bert'" in capsys.readouterr().err
