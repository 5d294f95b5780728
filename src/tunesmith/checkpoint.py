"""Find GPT-2 checkpoints (hub id, local folder, run) and load/save them in the Hugging Face format.

A checkpoint folder holds config.json, weights (model.safetensors, sharded safetensors, or
pytorch_model.bin read with weights_only=True) and tokenizer files; `transformers` reads what we
write and we read what it writes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tunesmith.errors import CheckpointError, ModelNotFoundError, TunesmithError
from tunesmith.files import link_or_copy, write_atomically
from tunesmith.model import GPT2, GPT2Config
from tunesmith.tokenizer import TOKENIZER_FILES, GPT2Tokenizer

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
PYTORCH_BIN_INDEX = "pytorch_model.bin.index.json"
# GPT-2 stored these four as Conv1D (in, out); our nn.Linear holds (out, in).
CONV1D_SUFFIXES = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)
# Buffers some checkpoints carry (the causal mask); not parameters.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# An unreachable hub costs one short attempt, never huggingface_hub's half minute of retries.
HUB_REQUEST_TIMEOUT = 3.0  # seconds per connect / read of the one check request
HUB_CHECK_SECONDS = 4.0  # the whole check, DNS included
_HUB_ADVICE = (
    "connect once to download it, set HF_ENDPOINT to a mirror, set HF_HUB_OFFLINE=1 with "
    "the model in the cache, or pass a local model folder"
)
# huggingface_hub's own messages during a download: a recorded run writes the `tunesmith`
# loggers to its log; without one they go nowhere (not Python's last-resort stderr handler).
HUB_LOGGER = logging.getLogger("tunesmith.hub")
HUB_LOGGER.addHandler(logging.NullHandler())


def resolve_model_dir(source: str | os.PathLike) -> Path:
    """A local folder holding the checkpoint named by `source`: a folder in the Hugging Face
    layout, or a hub id resolved through huggingface_hub's cache. Run references (runs/N) are
    the run store's to resolve (`tunesmith.load`, a run's `use`): this lowest layer knows
    nothing of runs."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return _checked_folder(path, text)
    if text.startswith((".", "/", "~")) or text.endswith("/") or text.count("/") > 1:
        raise ModelNotFoundError(
            f"model folder {text} does not exist; pass an existing folder, a run (runs/N) "
            "or a Hugging Face hub id such as gpt2"
        )
    return _download_from_hub(text)


def _checked_folder(path: Path, name: str) -> Path:
    if not path.is_dir():
        raise ModelNotFoundError(
            f"{name} is a file, not a model folder; pass the folder "
            "that holds config.json and the weights"
        )
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{name} has no config.json, so it is not a Hugging Face model "
            "folder; pass the folder written by save_pretrained or finetune"
        )
    return path


def _download_from_hub(repo_id: str) -> Path:
    """The hub cache folder holding config, weights (one format) and tokenizer of repo_id.

    A model already in the cache is used as it is, without the network: that starts fast and
    works offline. Otherwise one short request checks that the hub answers, and only then are
    the files downloaded (huggingface_hub shows progress bars).
    """
    from huggingface_hub.errors import LocalEntryNotFoundError

    hub = _hub_settings()
    try:
        try:
            return _fetch_checkpoint(repo_id, hub, local_only=True)
        except (LocalEntryNotFoundError, CheckpointError):
            if hub.offline:
                raise
        with _hub_messages_off_terminal():
            _check_hub_answers(repo_id, hub)
            return _fetch_checkpoint(repo_id, hub, local_only=False)
    except Exception as e:
        raise _hub_error(repo_id, hub, e) from None


def _hub_error(repo_id: str, hub: _HubSettings, error: Exception) -> Exception:
    """The one-line error for a failed hub lookup (our own errors pass as they are)."""
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    if isinstance(error, TunesmithError):
        return error
    if isinstance(error, HFValidationError):
        return ModelNotFoundError(
            f"{repo_id!r} is not a folder, a run or a valid hub id; pass an existing model "
            "folder, runs/N, or a hub id such as gpt2"
        )
    if isinstance(error, RepositoryNotFoundError):
        return ModelNotFoundError(
            f"model {repo_id!r} not found on the Hugging Face Hub; check the name "
            "(e.g. gpt2, gpt2-medium, distilgpt2) or pass a local folder"
        )
    if isinstance(error, LocalEntryNotFoundError) and hub.offline:
        return ModelNotFoundError(
            f"cannot load {repo_id!r}: it is not in the cache at {hub.cache} and HF_HUB_OFFLINE "
            "is set; unset it and connect once to download the model, set HF_ENDPOINT to a "
            "mirror, or pass a local model folder"
        )
    # Network errors that huggingface_hub passes through (httpx's, OSError) and hub outages.
    return ModelNotFoundError(
        f"cannot download {repo_id!r}: the Hugging Face Hub at {hub.endpoint} did not answer "
        f"({_reason(error)}); {_HUB_ADVICE}"
    )


def _reason(error: Exception) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    return f"HTTP {status}" if status else error.__class__.__name__


def _check_hub_answers(repo_id: str, hub: _HubSettings) -> None:
    """One short request for the model's config.json before any download.

    Without it an unreachable hub costs half a minute: huggingface_hub retries with back-off
    (1 + 2 + 4 + 8 + 8 s of "Retrying in ..."). The request runs in a thread so that the bound
    also covers what socket timeouts do not (a hanging DNS lookup). Any HTTP answer but a
    server error means the hub is there: the download then reports what it finds (404, ...).
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    outcome: list[BaseException | None] = []

    def attempt() -> None:
        url = hf_hub_url(repo_id, "config.json", endpoint=hub.endpoint)
        try:
            get_hf_file_metadata(url, timeout=HUB_REQUEST_TIMEOUT)  # no retries by default
            outcome.append(None)
        except Exception as e:  # handed over to the calling thread below
            outcome.append(e)

    thread = threading.Thread(target=attempt, name="tunesmith-hub-check", daemon=True)
    thread.start()
    thread.join(HUB_CHECK_SECONDS)
    if not outcome:
        raise TimeoutError(f"no answer within {HUB_CHECK_SECONDS:g} s")
    error = outcome[0]
    if error is None:
        return
    status = getattr(getattr(error, "response", None), "status_code", None) or 0
    if isinstance(error, HfHubHTTPError) and status < 500 and status != 429:
        return  # the hub answered; the download says what is wrong (unknown repo, gated, ...)
    raise error


@contextmanager
def _hub_messages_off_terminal() -> Iterator[None]:
    """huggingface_hub's warnings (retries of a flaky connection) go to the `tunesmith.hub`
    logger, which a recorded run writes to its log, instead of straight to the terminal."""
    hub_logger = logging.getLogger("huggingface_hub")
    saved = hub_logger.handlers[:], hub_logger.propagate
    hub_logger.handlers = [_Forward(HUB_LOGGER)]
    hub_logger.propagate = False
    try:
        yield
    finally:
        hub_logger.handlers, hub_logger.propagate = saved


class _Forward(logging.Handler):
    def __init__(self, target: logging.Logger):
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)


def _fetch_checkpoint(repo_id: str, hub: _HubSettings, local_only: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    def fetch(filename: str, required: bool = False) -> Path | None:
        try:
            return Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    cache_dir=hub.cache,
                    endpoint=hub.endpoint,
                    local_files_only=local_only,
                )
            )
        except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError)
            # Not in the cache, and offline or the hub unreachable.
            if required:
                raise
            return None
        except EntryNotFoundError:
            if required:
                raise CheckpointError(f"hub model {repo_id!r} has no {filename}") from None
            return None

    folder = fetch("config.json", required=True).parent
    if fetch(SAFETENSORS) is None:
        index = fetch(SAFETENSORS_INDEX)
        if index is not None:
            for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                fetch(shard, required=True)
        elif fetch(PYTORCH_BIN) is None:
            raise CheckpointError(
                f"hub model {repo_id!r} has no weights tunesmith can read "
                f"({SAFETENSORS} or {PYTORCH_BIN})"
            )
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        fetch(name)
    return folder


class _HubSettings(NamedTuple):
    cache: str  # the hub cache folder
    offline: bool
    endpoint: str  # the hub or a mirror (HF_ENDPOINT)


def _hub_settings() -> _HubSettings:
    """The hub cache, offline switch and endpoint as the environment says now: huggingface_hub
    reads them once at import, which misses changes made by a host program (or a test)."""
    from huggingface_hub import constants

    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not cache and env.get("HF_HOME"):
        cache = os.path.join(os.path.expanduser(env["HF_HOME"]), "hub")
    env_offline = env.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    endpoint = env.get("HF_ENDPOINT", "").strip().rstrip("/") or constants.ENDPOINT
    return _HubSettings(
        cache or constants.HF_HUB_CACHE,
        env_offline or bool(constants.HF_HUB_OFFLINE),
        endpoint,
    )


def read_config(folder: Path) -> GPT2Config:
    try:
        hf = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {folder / 'config.json'}: {e}") from None
    return GPT2Config.from_hf(hf)


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The raw tensors of a checkpoint folder, as the files store them (on the CPU, views of
    the memory-mapped files), never unpickling arbitrary objects."""
    if (folder / SAFETENSORS).is_file():
        return _load_safetensors(folder / SAFETENSORS)
    for index_name, loader in (
        (SAFETENSORS_INDEX, _load_safetensors),
        (PYTORCH_BIN_INDEX, _load_bin),
    ):
        if (folder / index_name).is_file():
            shards = sorted(
                set(json.loads((folder / index_name).read_text())["weight_map"].values())
            )
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(loader(folder / shard))
            return state
    if (folder / PYTORCH_BIN).is_file():
        return _load_bin(folder / PYTORCH_BIN)
    raise CheckpointError(
        f"no weights in {folder}: expected {SAFETENSORS} (or shards) or {PYTORCH_BIN}"
    )


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(path, framework="pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a pickle holding anything but tensors is refused here
        raise CheckpointError(
            f"cannot load {path} safely as plain tensors ({e}); convert it to model.safetensors"
        ) from None
    return state


def to_tunesmith_names(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map GPT2LMHeadModel / GPT2Model keys onto ours, transposing the Conv1D weights."""
    out = {}
    for key, tensor in hf_state.items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        if key != "lm_head.weight" and not key.startswith("transformer."):
            key = "transformer." + key  # GPT2Model checkpoints (e.g. the hub's gpt2) lack it
        if key.endswith(CONV1D_SUFFIXES):
            tensor = tensor.t()
        out[key] = tensor
    return out


def to_hf_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict as GPT2LMHeadModel keys and layouts (the tied lm_head left out)."""
    out = {}
    for key, tensor in state.items():
        if key == "lm_head.weight":
            continue
        if key.endswith(CONV1D_SUFFIXES):
            tensor = tensor.t()
        out[key] = tensor.contiguous()
    return out


def load_weights(model: GPT2, hf_state: dict[str, torch.Tensor], source: str = "checkpoint"):
    """Copy a Hugging Face state dict into `model`'s existing (allocated) parameters."""
    model.load_state_dict(_checked_state(model, hf_state, source), strict=False)


def _checked_state(
    model: GPT2, hf_state: dict[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """hf_state under our names, checked against the model's shapes, without the tied head."""
    state = to_tunesmith_names(hf_state)
    expected = model.state_dict(keep_vars=True)  # shapes only: no detached copies to make
    missing = [k for k in expected if k not in state and k != "lm_head.weight"]
    if missing:
        raise CheckpointError(
            f"{source} is missing {len(missing)} weights (e.g. {missing[0]}); "
            "is it a GPT-2 checkpoint matching its config.json?"
        )
    for key, tensor in state.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{source}: weight {key} has shape {tuple(tensor.shape)}, config.json implies "
                f"{tuple(expected[key].shape)}"
            )
    # Extra heads or buffers another library saved are dropped; lm_head is tied to wte.
    return {k: v for k, v in state.items() if k in expected and k != "lm_head.weight"}


def load_checkpoint(
    source: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.float32,
) -> tuple[GPT2, GPT2Tokenizer, Path]:
    """Load model and tokenizer from a hub id or folder; returns them and the folder.

    The weights go straight from the file into `dtype` on `device`: the model is built without
    any init (its empty tensors never touched) and takes the loaded tensors as its parameters.
    dtype None keeps them as the file stores them, and on the CPU as views of the memory-mapped
    file (safetensors, or .bin through torch's mmap), read only when used: for a caller that
    converts every weight itself (int8 quantization) without a float copy of the model."""
    folder = resolve_model_dir(source)
    config = read_config(folder)
    model = GPT2(config, init_weights=False)
    state = _checked_state(model, read_state_dict(folder), str(source))
    if dtype is None:
        state = {k: v.to(device) for k, v in state.items()}
    else:
        state = {k: _parameter(v, dtype).to(device) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # re-tie: assign replaced wte's
    tokenizer = GPT2Tokenizer.from_folder(folder)
    return model.eval(), tokenizer, folder


TRANSPOSE_BLOCK = 64  # source rows per piece of a transposing copy: both sides stay in cache


def _parameter(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A tensor read from the file as a contiguous parameter, floating ones in `dtype`, each
    converted on its own (never a whole float32 copy of the model). The Conv1D weights come as
    transposed views: they are copied a block of rows at a time, converting as they go, which
    takes half the time of one whole-matrix transposing copy and a conversion."""
    if not tensor.is_floating_point():
        return tensor.contiguous()
    if tensor.dim() != 2 or tensor.is_contiguous():
        return tensor.to(dtype).contiguous()
    out = torch.empty(tensor.shape, dtype=dtype)
    source = tensor.t()  # the file's own (in, out) layout, contiguous
    for start in range(0, source.shape[0], TRANSPOSE_BLOCK):
        out[:, start : start + TRANSPOSE_BLOCK].copy_(source[start : start + TRANSPOSE_BLOCK].t())
    return out


def write_weights(model: GPT2, path: str | os.PathLike) -> None:
    """`model`'s weights as the model.safetensors `transformers` reads: float32, its names
    and Conv1D layouts, the tied head left out. The one writer of those bytes, so that a
    fine-tune's last training checkpoint can be the very file its model folder holds."""
    state = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    save_file(to_hf_names(state), path, metadata={"format": "pt"})
    os.chmod(path, 0o644)  # safetensors writes owner-only; a model is for sharing


def save_checkpoint(
    model: GPT2,
    tokenizer: GPT2Tokenizer | None,
    folder: str | os.PathLike,
    generation_config: dict | None = None,
    weights_file: str | os.PathLike | None = None,
) -> Path:
    """Write a folder that `transformers`' from_pretrained loads as the same model.

    `weights_file`: a file `write_weights` wrote from the model's current weights; it is
    hard-linked into the folder (copied across filesystems) instead of written again."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        if weights_file is None:
            write_weights(model, tmp)
        else:
            link_or_copy(weights_file, tmp)

    write_atomically(folder / SAFETENSORS, write)  # never a half-written weights file
    (folder / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2))
    eos = model.config.eos_token_id
    gen = {
        "bos_token_id": model.config.bos_token_id,
        "eos_token_id": eos,
        **(generation_config or {}),
    }
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2))
    if tokenizer is not None:
        tokenizer.save(folder)
    return folder
