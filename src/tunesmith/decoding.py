"""Batched incremental decoding with the KV cache: token ids in, token ids out.

Prompts of different lengths are left-padded; a sequence that finishes is dropped from the batch
so it stops costing compute. Text, stop strings and streaming live one layer up (generate.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from tunesmith.errors import ContextLengthError, UsageError
from tunesmith.model import GPT2
from tunesmith.options import require_finite
from tunesmith.sampling import apply_repetition_penalty, sample


@dataclass(frozen=True)
class SamplingSettings:
    """The token-level part of a GenerationConfig (`GenerationConfig.sampling()`): how one
    sequence is sampled. temperature 0 means greedy."""

    max_new_tokens: int = 70
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        require_finite(self)
        if self.max_new_tokens < 1:
            raise UsageError(f"length must be at least 1 token, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UsageError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise UsageError(f"top-k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise UsageError(
                f"repetition penalty must be > 0 (1 = off), got {self.repetition_penalty}"
            )


@dataclass
class DecodingSequence:
    """The decoder's state of one GenerationRequest: its prompt, sampling settings, RNG and
    the tokens produced so far."""

    prompt_ids: list[int]
    settings: SamplingSettings
    generator: torch.Generator
    new_ids: list[int]
    finish_reason: str | None = None  # "eos", "length" or "stop"

    @classmethod
    def start(
        cls, prompt_ids: list[int], settings: SamplingSettings, seed: int
    ) -> DecodingSequence:
        if not prompt_ids:
            raise UsageError(
                "a prompt needs at least one token (use <|endoftext|> to start unconditionally)"
            )
        return cls(list(prompt_ids), settings, torch.Generator().manual_seed(seed), [])


def check_fits(prompt_len: int, max_new_tokens: int, context: int) -> None:
    if prompt_len + max_new_tokens > context:
        raise ContextLengthError(
            f"prompt of {prompt_len} tokens + {max_new_tokens} new tokens exceeds the model's "
            f"context of {context} tokens; shorten the prompt or ask for fewer tokens"
        )


@torch.inference_mode()
def decode(
    model: GPT2,
    sequences: list[DecodingSequence],
    eos_id: int,
    is_stopped: Callable[[DecodingSequence], bool] | None = None,
) -> Iterator[list[tuple[int, int]]]:
    """Decode all sequences together; after each step yield (index, new token) for every
    sequence still running. A sequence ends at eos (unless ignore_eos), at its token budget,
    or when is_stopped(sequence) says so (stop strings); its finish_reason is then set."""
    for seq in sequences:
        check_fits(len(seq.prompt_ids), seq.settings.max_new_tokens, model.config.n_positions)
    device = model.device
    L = max(len(s.prompt_ids) for s in sequences)
    total = L + max(s.settings.max_new_tokens for s in sequences)
    padded = any(len(s.prompt_ids) != L for s in sequences)
    idx, mask = _left_padded(sequences, eos_id, total, device)
    positions = (mask[:, :L].cumsum(-1) - 1).clamp(min=0)  # padding takes no positions
    next_pos = positions[:, -1:] + 1
    seen = _seen_tokens(sequences, idx, eos_id, model.config.vocab_size)

    cache = model.make_cache(len(sequences), total)
    logits = model(
        idx,
        0,
        cache,
        attention_mask=mask[:, :L] if padded else None,
        position_ids=positions,
        last_only=True,
    )[:, -1]
    active = list(range(len(sequences)))  # sequences still decoding, in cache-row order
    step = 0
    while active:
        tokens = _next_tokens(logits, [sequences[i] for i in active], seen)
        emitted = [(i, int(tokens[row])) for row, i in enumerate(active)]
        keep = [
            row
            for row, (i, token) in enumerate(emitted)
            if not _finishes(sequences[i], token, eos_id, is_stopped)
        ]
        yield emitted
        if not keep:
            return
        if len(keep) < len(active):
            rows = torch.tensor(keep, device=device)
            cache.keep_rows(rows)
            tokens, mask, next_pos = tokens[rows], mask[rows], next_pos[rows]
            seen = seen[rows] if seen is not None else None
            active = [active[r] for r in keep]
        if seen is not None:
            seen.scatter_(1, tokens[:, None], True)
        step += 1
        mask[:, L + step - 1] = 1
        logits = model(
            tokens[:, None],
            L + step - 1,
            cache,
            attention_mask=mask[:, : L + step] if padded else None,
            position_ids=next_pos,
        )[:, -1]
        next_pos = next_pos + 1


def _left_padded(
    sequences: list[DecodingSequence], pad_id: int, total: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts left-padded to one length L: ids (B, L) and the attention mask (B, total),
    1 on prompt tokens, to be filled in as tokens are generated."""
    L = max(len(s.prompt_ids) for s in sequences)
    idx = torch.full((len(sequences), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), total), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq.prompt_ids)
        idx[row, L - n :] = torch.tensor(seq.prompt_ids)
        mask[row, L - n :] = 1
    return idx.to(device), mask.to(device)


def _seen_tokens(
    sequences: list[DecodingSequence], idx: torch.Tensor, eos_id: int, vocab_size: int
) -> torch.Tensor | None:
    """(B, vocab) bool: the tokens of each prompt, for the repetition penalty (None if off)."""
    if all(s.settings.repetition_penalty == 1.0 for s in sequences):
        return None
    seen = torch.zeros((len(sequences), vocab_size), dtype=torch.bool, device=idx.device)
    seen.scatter_(1, idx, True)  # padding is eos, which is then seen; harmless for ranking
    for row, seq in enumerate(sequences):
        if len(seq.prompt_ids) < idx.shape[1] and eos_id not in seq.prompt_ids:
            seen[row, eos_id] = False
    return seen


def _finishes(
    seq: DecodingSequence,
    token: int,
    eos_id: int,
    is_stopped: Callable[[DecodingSequence], bool] | None,
) -> bool:
    """Append the token; set finish_reason and return True if the sequence ends here."""
    seq.new_ids.append(token)
    if token == eos_id and not seq.settings.ignore_eos:
        seq.finish_reason = "eos"
    elif is_stopped is not None and is_stopped(seq):
        seq.finish_reason = "stop"
    elif len(seq.new_ids) >= seq.settings.max_new_tokens:
        seq.finish_reason = "length"
    return seq.finish_reason is not None


def _next_tokens(logits: torch.Tensor, seqs: list[DecodingSequence], seen: torch.Tensor | None):
    """Sample one token per row; rows that share settings are sampled together."""
    if seen is not None:
        penalties = torch.tensor(
            [s.settings.repetition_penalty for s in seqs], device=logits.device, dtype=logits.dtype
        )[:, None]
        logits = apply_repetition_penalty(logits, seen, penalties)
    first = seqs[0].settings
    if all(_same_sampling(s.settings, first) for s in seqs):
        return sample(
            logits, [s.generator for s in seqs], first.temperature, first.top_k, first.top_p
        )
    return torch.cat(
        [
            sample(
                logits[row : row + 1],
                [s.generator],
                s.settings.temperature,
                s.settings.top_k,
                s.settings.top_p,
            )
            for row, s in enumerate(seqs)
        ]
    )


def _same_sampling(a: SamplingSettings, b: SamplingSettings) -> bool:
    return (a.temperature, a.top_k, a.top_p) == (b.temperature, b.top_k, b.top_p)
