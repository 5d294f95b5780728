"""Training state for --resume: everything a killed run needs to carry on exactly where it stopped.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` with the trainable weights
(model.safetensors), the optimizer state (optimizer.pt, tensors only), the RNG states (rng.pt) and
the loop's position and history (trainer_state.json). It is written to a hidden temporary folder
and renamed into place, so a crash or a full disk never leaves a half-written checkpoint; only
then are the oldest beyond --keep-checkpoints removed. Loading never unpickles arbitrary objects.

The weights are under tunesmith's names, except in the last checkpoint of a finished full
fine-tune: there they are the very bytes of the model folder's model.safetensors (`transformers`'
names, trainer_state "weights": "transformers"), so that the model folder links that file
instead of writing the same weights a second time.
"""

from __future__ import annotations

import errno
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tunesmith.checkpoint import to_tunesmith_names, write_weights
from tunesmith.errors import CheckpointError, RunError
from tunesmith.files import write_folder_atomically

CHECKPOINTS = "checkpoints"
BEST = "best"
PREFIX = "step-"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
WEIGHTS_FILE = "model.safetensors"
# How a checkpoint's weights are named and laid out (trainer_state "weights"; absent: ours).
OURS, TRANSFORMERS = "tunesmith", "transformers"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights that training changes (all of them, or only LoRA adapters), once each."""
    return {
        name: p.detach().to("cpu").contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *[float(x) for x in np_state[2:]],
        ],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))


def save_training_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    trainer_state: dict[str, Any],
    keep: int,
    weights: str = OURS,
) -> Path:
    """Write checkpoints/step-N atomically, then prune to the newest `keep`. optimizer None:
    training is over, so its state (twice the weights' bytes) would never be read again.
    weights TRANSFORMERS (a full model only): the model folder's bytes, for it to share."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"{PREFIX}{trainer_state['step']:07d}"

    def write(tmp: Path) -> None:
        if weights == TRANSFORMERS:
            write_weights(model, tmp / WEIGHTS_FILE)
        else:
            save_file(trainable_state(model), tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        torch.save(rng_state(), tmp / "rng.pt")
        state = {**trainer_state, "weights": weights}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))

    _write_checkpoint(final, write)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_best(run_dir: Path, model: torch.nn.Module, info: dict[str, Any]) -> Path:
    """Keep the weights with the best validation loss so far (for --early-stop)."""

    def write(tmp: Path) -> None:
        save_file(trainable_state(model), tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        (tmp / STATE_FILE).write_text(json.dumps(info, indent=1))

    return _write_checkpoint(Path(run_dir) / CHECKPOINTS / BEST, write)


def _write_checkpoint(final: Path, write: Callable[[Path], None]) -> Path:
    """Write a checkpoint folder atomically; a failure says which checkpoints are intact."""
    try:
        return write_folder_atomically(final, write)
    except BaseException as e:
        reason = write_failure(e)
        if reason is None:
            raise
        kept = ", ".join(p.name for p in list_checkpoints(final.parent.parent)) or "none"
        raise CheckpointError(
            f"cannot write {final.name}: {reason}; earlier checkpoints are intact ({kept}); "
            "free some space (or lower --keep-checkpoints) and resume with --resume"
        ) from None


# How the writers say the disk is full: the OS's errno; safetensors its own error type with
# the OS's text; torch.save a RuntimeError from its zip writer ("unexpected pos 6720 vs 6612",
# "PytorchStreamWriter failed writing file") when a write comes up short.
DISK_FULL_TEXTS = ("No space left", "Disk quota exceeded", "unexpected pos", "failed writing file")


def write_failure(e: BaseException) -> str | None:
    """Why writing a file failed, in words ("the disk is full"); None for an error that is not
    a failed write (a bug, an interrupt), which should propagate as it is."""
    if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
        text in str(e) for text in DISK_FULL_TEXTS
    ):
        return "the disk is full"
    if isinstance(e, OSError):
        return str(e.strerror or e)
    return None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(
        (p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()),
        key=lambda p: p.name,
    )


def latest_checkpoint(run_dir: Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise RunError(
            f"{run_dir} has no training checkpoint to resume from (it stopped before its first "
            "--save-every or epoch end); start it again without --resume"
        )
    return found[-1]


def final_weights(run_dir: Path, step: int) -> Path | None:
    """The weights file the model folder can share: the run's last checkpoint's, when that
    checkpoint is at `step` and holds the whole model in `transformers`' layout."""
    found = list_checkpoints(run_dir)
    if not found or found[-1].name != f"{PREFIX}{step:07d}":
        return None
    try:
        weights = json.loads((found[-1] / STATE_FILE).read_text()).get("weights", OURS)
    except (OSError, ValueError):
        return None  # unreadable: the model folder then writes its own weights
    return found[-1] / WEIGHTS_FILE if weights == TRANSFORMERS else None


def load_weights_into(model: torch.nn.Module, folder: Path, weights: str = OURS) -> None:
    state = load_file(Path(folder) / WEIGHTS_FILE)
    if weights == TRANSFORMERS:
        state = to_tunesmith_names(state)
    params = dict(model.named_parameters())
    missing = [k for k, p in params.items() if p.requires_grad and k not in state]
    if missing or any(k not in params for k in state):
        raise CheckpointError(
            f"checkpoint {folder} does not fit this model (e.g. {(missing or list(state))[0]}); "
            "resume with the settings the run was started with"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def load_training_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore weights, optimizer and RNG; return the trainer state (step, position, history)."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {folder}: {e}") from None
    load_weights_into(model, folder, state.get("weights", OURS))
    try:
        if (folder / OPTIMIZER_FILE).is_file():  # absent once training has finished
            optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, weights_only=True))
        rng = torch.load(folder / "rng.pt", weights_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot read checkpoint {folder}: {e}") from None
    set_rng_state(rng)
    return state
