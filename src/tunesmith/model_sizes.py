"""GPT-2 shapes for training from scratch (`finetune --from-scratch SIZE`), tiny to GPT-2 124M.

Every size keeps GPT-2's tokenizer (50,257 tokens) and context (1,024), so a model trained from
scratch loads, generates and serves like any GPT-2. Each size also carries the defaults that suit
a small dataset, as nanoGPT's small configs do: a higher peak learning rate for smaller models
(GPT-2 124M itself trained at 6e-4) and more dropout than GPT-2's 0.1, because a few thousand
examples are quickly memorised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunesmith.errors import UsageError
from tunesmith.tokenizer import GPT2_CONTEXT, GPT2Tokenizer, gpt2_tokenizer

if TYPE_CHECKING:
    from tunesmith.model import GPT2, GPT2Config


@dataclass(frozen=True)
class ModelSize:
    n_layer: int
    n_head: int
    n_embd: int
    lr: float  # peak learning rate
    dropout: float  # embedding, residual and attention-probability dropout of the config
    # the parameter count of GPT2 in this shape (a test checks it), written out so that --help
    # lists the sizes without importing torch.
    num_parameters: int

    def config(self) -> GPT2Config:
        # Imported here, not at the top: the CLI builds --help from this table without torch.
        from tunesmith.model import GPT2Config

        return GPT2Config(
            n_positions=GPT2_CONTEXT,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            resid_pdrop=self.dropout,
            embd_pdrop=self.dropout,
            attn_pdrop=self.dropout,
        )


SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(2, 2, 128, lr=3e-3, dropout=0.1, num_parameters=6_960_768),
    "mini": ModelSize(4, 4, 256, lr=1e-3, dropout=0.2, num_parameters=16_287_488),
    "small": ModelSize(6, 6, 384, lr=1e-3, dropout=0.2, num_parameters=30_339_456),
    "base": ModelSize(8, 8, 512, lr=6e-4, dropout=0.2, num_parameters=51_475_968),
    "gpt2": ModelSize(12, 12, 768, lr=6e-4, dropout=0.1, num_parameters=124_439_808),
}
# Warm-up from scratch: this share of the steps, at most SCRATCH_WARMUP_MAX steps.
SCRATCH_WARMUP_SHARE = 0.05
SCRATCH_WARMUP_MAX = 100


def model_size(name: str) -> ModelSize:
    try:
        return SIZES[name]
    except KeyError:
        raise UsageError(
            f"--from-scratch must be one of {', '.join(SIZES)}, not {name!r}"
        ) from None


def describe_sizes() -> str:
    """One phrase per size for --help: 'tiny (6.8M: 2 layers x 128)' ..."""
    return ", ".join(
        f"{name} ({s.num_parameters / 1e6:.1f}M: {s.n_layer} layers x {s.n_embd})"
        for name, s in SIZES.items()
    )


FROM_SCRATCH_HELP = (
    "train a randomly initialised GPT-2 of this size with GPT-2's tokenizer (no download; "
    f"--model is not used): {describe_sizes()}"
)


def scratch_warmup(total_steps: int) -> int:
    return min(SCRATCH_WARMUP_MAX, int(total_steps * SCRATCH_WARMUP_SHARE))


def random_model(name: str) -> tuple[GPT2, GPT2Tokenizer]:
    """A randomly initialised GPT-2 of size `name` (GPT-2's own init; seed torch first for a
    reproducible one) and GPT-2's tokenizer, shipped with tunesmith."""
    from tunesmith.model import GPT2

    return GPT2(model_size(name).config()), gpt2_tokenizer()
