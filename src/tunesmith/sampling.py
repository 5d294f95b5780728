"""Pure functions that turn next-token logits into tokens.

Each row of a batch samples with its own torch.Generator, so a sample depends only on its own
seed, never on which other samples share its batch (the server batches requests together).
"""

from __future__ import annotations

import torch


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor, penalty: float | torch.Tensor
) -> torch.Tensor:
    """CTRL-style penalty, as `transformers` applies it: divide positive logits of tokens
    already in the sequence by `penalty`, multiply negative ones. seen: (B, vocab) bool;
    penalty: a float or one per row, shape (B, 1)."""
    if isinstance(penalty, float) and penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability adds up to at least p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # Drop a token when the tokens before it already reach p; the top token always stays.
    drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample(
    logits: torch.Tensor,
    generators: list[torch.Generator],
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """Next tokens (B,) from logits (B, vocab); temperature 0 means greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    logits = top_p_filter(top_k_filter(logits, top_k), top_p)
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)
    # Inverse-CDF sampling with one uniform draw per row from that row's own generator.
    u = torch.stack([torch.rand((), generator=g) for g in generators]).to(cdf.device)
    u = u * cdf[:, -1]
    tokens = torch.searchsorted(cdf, u[:, None]).squeeze(-1)
    return tokens.clamp_(max=logits.shape[-1] - 1)
