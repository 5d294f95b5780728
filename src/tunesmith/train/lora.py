"""LoRA: train a low-rank update B·A beside frozen nn.Linear weights, then merge it in.

`LoRALinear` starts with B = 0, so the wrapped model is exactly the base model at step 0. `merge`
folds the update into the base weight and is safe to call twice; `unwrap_lora` turns the model back
into a plain GPT-2 (what we save). The adapters alone save to and load from safetensors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunesmith.errors import CheckpointError
from tunesmith.fused import Dropout

ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class LoRALinear(nn.Module):
    """y = base(x) + dropout(x) Aᵀ Bᵀ · alpha / rank, with base frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(
            torch.empty(rank, base.in_features, device=base.weight.device, dtype=base.weight.dtype)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(base.out_features, rank, device=base.weight.device, dtype=base.weight.dtype)
        )
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        for p in base.parameters():
            p.requires_grad_(False)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in), as nn.Linear's weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        down = self.dropout(x) @ self.lora_A.t()  # (..., rank)
        # Scaling B (out x rank) costs less than scaling the product (tokens x out), and addmm
        # adds the product to y in the same pass.
        up = (self.lora_B * self.scaling).t()
        flat = torch.addmm(y.reshape(-1, y.shape[-1]), down.reshape(-1, self.rank), up)
        return flat.view(y.shape)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold B·A into the base weight; a second call does nothing."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True


def _targets(model: nn.Module, targets: tuple[str, ...]) -> list[tuple[nn.Module, str, nn.Linear]]:
    found = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and any(full.endswith(t) for t in targets):
                found.append((module, child_name, child))
    return found


def apply_lora(
    model: nn.Module, rank: int, alpha: float, dropout: float, targets: tuple[str, ...]
) -> list[str]:
    """Freeze every base weight and wrap the targeted Linears; returns the wrapped names."""
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for parent, child_name, child in _targets(model, targets):
        setattr(parent, child_name, LoRALinear(child, rank, alpha, dropout))
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            wrapped.append(name)
    if not wrapped:
        raise CheckpointError(f"no layers named {', '.join(targets)} to put LoRA adapters on")
    return wrapped


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.merge()


def unwrap_lora(model: nn.Module) -> nn.Module:
    """Merge the adapters and put the plain Linears back; the model is then a plain GPT-2."""
    for name, layer in lora_layers(model).items():
        layer.merge()
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, layer.base)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
        if k.endswith(("lora_A", "lora_B"))
    }


def save_adapter(model: nn.Module, folder: str | Path, config: dict) -> Path:
    """The adapters alone (a few MB), with the rank/alpha/targets that rebuild them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(model), folder / ADAPTER_FILE, metadata={"format": "pt"})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_adapter(model: nn.Module, folder: str | Path) -> None:
    """Load adapters saved by `save_adapter` into a model wrapped with the same settings."""
    state = load_file(Path(folder) / ADAPTER_FILE)
    expected = adapter_state(model)
    if set(state) != set(expected):
        raise CheckpointError(
            f"adapter in {folder} does not match this model's LoRA layers "
            f"({len(state)} vs {len(expected)} tensors); use the same --lora-targets and rank"
        )
    model.load_state_dict(state, strict=False)
