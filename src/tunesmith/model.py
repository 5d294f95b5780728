"""A lean GPT-2 in PyTorch that keeps Hugging Face's parameter names.

Names follow `transformers`' GPT2LMHeadModel (`transformer.wte`, `transformer.h.N.attn.c_attn`,
`lm_head`, ...) so a checkpoint maps on directly; the only difference is that we use nn.Linear
where GPT-2 used Conv1D, so those four weights are stored transposed (see checkpoint.py).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from tunesmith import fused
from tunesmith.errors import CheckpointError, ContextLengthError, UsageError
from tunesmith.linear import Linear

IGNORE_INDEX = -100  # target of positions that carry no loss (padding), as in PyTorch

# The activations GPT-2 checkpoints use, by their `transformers` names.
ACTIVATIONS = {
    "gelu_new": fused.gelu_tanh,
    "gelu_pytorch_tanh": fused.gelu_tanh,
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


@dataclass
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    bos_token_id: int = 50256
    eos_token_id: int = 50256

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise CheckpointError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if self.activation_function not in ACTIVATIONS:
            raise CheckpointError(
                f"unsupported activation_function {self.activation_function!r}; "
                f"supported: {', '.join(ACTIVATIONS)}"
            )
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            if getattr(self, name) <= 0:
                raise CheckpointError(f"config {name} must be positive, got {getattr(self, name)}")

    @property
    def mlp_width(self) -> int:
        return self.n_inner or 4 * self.n_embd

    @classmethod
    def from_hf(cls, hf: dict) -> GPT2Config:
        """Build from a Hugging Face config.json dict; refuses other architectures."""
        model_type = hf.get("model_type")
        if model_type != "gpt2":
            raise CheckpointError(
                f"config.json has model_type {model_type!r}; tunesmith loads GPT-2-family "
                "models (model_type 'gpt2'), e.g. gpt2, gpt2-medium, distilgpt2"
            )
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in hf.items() if k in known and v is not None}
        return cls(**values)

    def to_hf(self) -> dict:
        """The config.json that `transformers` reads back as the same model."""
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            **asdict(self),
            "n_ctx": self.n_positions,
            "tie_word_embeddings": True,
        }


class KVCache:
    """Keys and values of past positions, one preallocated buffer per layer.

    Made by `GPT2.make_cache`, passed to `forward` with `input_pos`, and dropped (or shrunk with
    `keep_rows`) when a batch finishes. Shapes: (B, n_head, max_len, head_dim).
    """

    def __init__(
        self,
        config: GPT2Config,
        batch_size: int,
        max_len: int,
        device: torch.device,
        dtype: torch.dtype,
    ):
        if max_len > config.n_positions:
            raise ContextLengthError(
                f"cache of {max_len} positions exceeds the model's context of "
                f"{config.n_positions} tokens"
            )
        head_dim = config.n_embd // config.n_head
        shape = (batch_size, config.n_head, max_len, head_dim)
        self.max_len = max_len
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)
        ]

    def update(self, layer: int, input_pos: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, H, T, D) at positions input_pos.. and return all keys/values so far."""
        end = input_pos + k.shape[2]
        if end > self.max_len:
            raise ContextLengthError(
                f"decoding past the cache's {self.max_len} positions; make a larger cache"
            )
        self.keys[layer][:, :, input_pos:end] = k
        self.values[layer][:, :, input_pos:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Drop finished sequences from the batch so they stop costing compute."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = Linear(config.n_embd, config.n_embd)
        self.attn_dropout = config.attn_pdrop
        self.resid_dropout = fused.Dropout(config.resid_pdrop)
        self.layer_idx = layer_idx
        head_dim = config.n_embd // config.n_head
        scale = 1.0 / math.sqrt(head_dim) if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            scale /= float(layer_idx + 1)
        self.scale = scale

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None, input_pos: int
    ) -> torch.Tensor:
        return self.resid_dropout(self.c_proj(self._attend(self.c_attn(x), mask, cache, input_pos)))

    def forward_groups(self, x: torch.Tensor, groups: list[_Group]) -> torch.Tensor:
        """x (1, N, C): the tokens of several groups of sequences, one after another (see
        GPT2.forward_groups); the products run on all of them, attention group by group."""
        qkv = self.c_attn(x)[0]  # (N, 3 C)
        ys, at = [], 0
        for g in groups:
            n = g.rows * g.tokens
            y = self._attend(
                qkv[at : at + n].view(g.rows, g.tokens, -1), g.mask, g.cache, g.input_pos
            )
            ys.append(y.reshape(n, -1))
            at += n
        return self.resid_dropout(self.c_proj(torch.cat(ys)[None]))

    def _attend(
        self, qkv: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None, input_pos: int
    ) -> torch.Tensor:
        """Attention's output (B, T, C) for the c_attn output qkv (B, T, 3 C)."""
        B, T, C = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        q, k, v = qkv.split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q = q.view(B, T, self.n_head, -1).transpose(1, 2)
        k = k.view(B, T, self.n_head, -1).transpose(1, 2)
        v = v.view(B, T, self.n_head, -1).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_idx, input_pos, k, v)
        if T == 1 and fused.takes_decode_attention(q, k, v):
            keys = None if mask is None else mask[:, 0, 0]  # (B, S): what each query may see
            return fused.decode_attention(q, k, v, keys, self.scale)
        dropout = self.attn_dropout if self.training else 0.0
        if mask is None:
            # Fast path: plain causal attention over a prefix starting at position 0.
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout, is_causal=T > 1, scale=self.scale
            )
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.scale
            )
        return y.transpose(1, 2).reshape(B, T, C)


class MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, config.mlp_width)
        self.c_proj = Linear(config.mlp_width, config.n_embd)
        self.act = ACTIVATIONS[config.activation_function]
        self.dropout = fused.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, mask, cache, input_pos):
        x = x + self.attn(self.ln_1(x), mask, cache, input_pos)
        return x + self.mlp(self.ln_2(x))

    def forward_groups(self, x: torch.Tensor, groups: list[_Group]) -> torch.Tensor:
        x = x + self.attn.forward_groups(self.ln_1(x), groups)
        return x + self.mlp(self.ln_2(x))


@dataclass
class Segment:
    """Sequences at one stage of decoding, for GPT2.forward_groups: tokens idx (B, T) placed at
    positions input_pos.. of `cache` (their rows and columns of it), with attention_mask and
    position_ids as GPT2.forward takes them."""

    idx: torch.Tensor
    input_pos: int
    cache: KVCache
    attention_mask: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None


@dataclass
class _Group:
    """A segment as the layers see it: its shape, cache, start and attention mask."""

    rows: int
    tokens: int
    cache: KVCache
    input_pos: int
    mask: torch.Tensor | None


_NO_INIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _layers_uninitialised() -> Iterator[None]:
    """Layers built inside skip their reset_parameters (their random init). Cheaper than
    building on the meta device, which imports torch._dynamo (about 1.5 s) to run the init
    functions there. The lock keeps threads that build layers at the same time apart."""
    classes = (nn.Linear, nn.Embedding, nn.LayerNorm)
    with _NO_INIT_LOCK:
        saved = [cls.__dict__["reset_parameters"] for cls in classes]
        try:
            for cls in classes:
                cls.reset_parameters = lambda self: None
            yield
        finally:
            for cls, method in zip(classes, saved, strict=True):
                cls.reset_parameters = method


class Transformer(nn.Module):
    """The `transformer.` prefix of GPT2LMHeadModel's parameter names."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = fused.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


class GPT2(nn.Module):
    def __init__(self, config: GPT2Config, init_weights: bool = True):
        """init_weights=False leaves the weights uninitialised (torch.empty), for weights
        about to be loaded: no random init at all, not even the layers' own."""
        super().__init__()
        self.config = config
        with contextlib.nullcontext() if init_weights else _layers_uninitialised():
            self.transformer = Transformer(config)
            self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        self.gradient_checkpointing = False
        if not init_weights:
            return
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # Read from the final layer norm, which stays float when the linear layers are quantized.
    @property
    def device(self) -> torch.device:
        return self.transformer.ln_f.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.ln_f.weight.dtype

    def make_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        return KVCache(
            self.config, batch_size, max_len or self.config.n_positions, self.device, self.dtype
        )

    def forward(
        self,
        idx: torch.Tensor,
        input_pos: int = 0,
        cache: KVCache | None = None,
        targets: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) for tokens idx (B, T) placed at positions input_pos.. .

        With targets (B, T) (next-token ids, IGNORE_INDEX where there is none) it returns the
        summed cross-entropy instead, projecting onto the vocabulary only the positions that
        have a target: that matmul is the biggest of a small GPT-2. attention_mask
        (B, input_pos + T), 1 for real tokens and 0 for padding, is needed only for left-padded
        batches; position_ids then skip the padding. last_only computes logits for the final
        position alone (what decoding needs).
        """
        x = self.hidden_states(idx, input_pos, cache, attention_mask, position_ids)
        if targets is not None:
            return self._loss(x, targets)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(x)

    def hidden_states(
        self,
        idx: torch.Tensor,
        input_pos: int = 0,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final layer-normed states (B, T, n_embd) that the LM head projects."""
        x = self._embedded(idx, input_pos, cache, position_ids)
        mask = self._attention_mask(attention_mask, input_pos, idx.shape[1])
        for block in self.transformer.h:
            if self.gradient_checkpointing and self.training:
                # Keep only each block's input; recompute its activations in backward.
                x = torch.utils.checkpoint.checkpoint(
                    block, x, mask, cache, input_pos, use_reentrant=False
                )
            else:
                x = block(x, mask, cache, input_pos)
        return self.transformer.ln_f(x)

    def forward_groups(self, segments: list[Segment]) -> torch.Tensor:
        """The final states (sequences, n_embd) of the last position of every sequence of
        `segments`, in their order, from one pass: say a batch decoding its next tokens and
        newcomers' prompts; `lm_head` turns any of them into logits. The layers' products
        (reading every weight) run once on all the tokens, attention runs segment by segment;
        each sequence gets the numbers forward would give it, up to float rounding. For
        decoding (no autograd, eval)."""
        xs, groups = [], []
        for seg in segments:
            B, T = seg.idx.shape
            xs.append(
                self._embedded(seg.idx, seg.input_pos, seg.cache, seg.position_ids).reshape(
                    B * T, -1
                )
            )
            mask = self._attention_mask(seg.attention_mask, seg.input_pos, T)
            groups.append(_Group(B, T, seg.cache, seg.input_pos, mask))
        x = torch.cat(xs)[None]  # (1, N, C)
        for block in self.transformer.h:
            x = block.forward_groups(x, groups)
        last, at = [], 0  # each sequence's last token
        for g in groups:
            last.extend(range(at + g.tokens - 1, at + g.rows * g.tokens, g.tokens))
            at += g.rows * g.tokens
        return self.transformer.ln_f(x[0, last])

    def _embedded(
        self,
        idx: torch.Tensor,
        input_pos: int,
        cache: KVCache | None,
        position_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """Token and position embeddings of idx (B, T) at positions input_pos.. (dropped out)."""
        B, T = idx.shape
        if input_pos + T > self.config.n_positions:
            raise ContextLengthError(
                f"{input_pos + T} tokens exceed the model's context of "
                f"{self.config.n_positions}; shorten the prompt or --length"
            )
        if cache is None and input_pos != 0:
            raise UsageError(
                "input_pos > 0 needs the KV cache of the earlier positions; "
                "make one with model.make_cache() and pass it on every call"
            )
        if position_ids is None:
            position_ids = torch.arange(input_pos, input_pos + T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(position_ids)
        return self.transformer.drop(x)

    def _loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of the head's logits at x (B, T, C) against targets (B, T)."""
        h = x.reshape(-1, x.shape[-1])  # (B * T, C)
        targets = targets.reshape(-1)
        # Selecting rows gives data-dependent shapes, which torch.compile cannot trace whole;
        # compiled, the head runs on every position and ignore_index drops the rest.
        if not torch.compiler.is_compiling():
            keep = targets != IGNORE_INDEX
            h, targets = h[keep], targets[keep]  # (N, C): only positions with a target
            if fused.takes_head(h, self.lm_head):
                return fused.head_cross_entropy(h, self.lm_head.weight, targets)
        logits = self.lm_head(h).float()
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")

    def _attention_mask(
        self, attention_mask: torch.Tensor | None, input_pos: int, T: int
    ) -> torch.Tensor | None:
        """None when plain causal attention is right (no padding, prefix starting at 0 or one
        new token); else a boolean (B, 1, T, input_pos + T) mask: causal and no padded keys."""
        if attention_mask is None and (input_pos == 0 or T == 1):
            return None
        S = input_pos + T
        device = self.device
        causal = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=input_pos)
        mask = causal[None, None]
        if attention_mask is not None:
            keys = attention_mask[:, None, None, :S].to(torch.bool)
            mask = mask & keys
            # A fully padded query row would give NaN; let it attend to itself instead.
            eye = torch.zeros(T, S, dtype=torch.bool, device=device)
            eye[torch.arange(T), torch.arange(input_pos, S)] = True
            mask = mask | eye[None, None]
        return mask
