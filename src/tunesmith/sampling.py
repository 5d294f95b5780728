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


NUCLEUS_PROBE = 1024  # top-p looks here first


def sample(
    logits: torch.Tensor,
    generators: list[torch.Generator],
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """Next tokens (B,) from logits (B, vocab); temperature 0 means greedy.

    Candidates are kept in descending order and sampled there, so no mask is scattered back
    over the vocabulary, and a full sort happens only when the nucleus is not within the top
    NUCLEUS_PROBE tokens (on a small busy CPU a 50k sort costs more than a model step).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    vocab = logits.shape[-1]
    log_total = None  # log of the probability mass the candidates share (top-p needs it)
    if 0 < top_k < vocab:
        values, order = torch.topk(logits, top_k, dim=-1)  # sorted, descending
        if top_p < 1.0:
            log_total = values.logsumexp(dim=-1, keepdim=True)  # renormalised over the top k
    elif top_p < 1.0:
        log_total = logits.logsumexp(dim=-1, keepdim=True)
        values, order = torch.topk(logits, min(vocab, NUCLEUS_PROBE), dim=-1)
        if ((values - log_total).exp().sum(dim=-1) < top_p).any():
            values, order = torch.sort(logits, descending=True, dim=-1)
    else:
        values, order = logits, None
    # Gumbel-max, with the noise keyed by token id: a token's score moves only as much as its
    # own logit does, so the last-bit differences that batching (left padding) makes to the
    # logits practically never change the pick. An inverse-CDF draw did: its one uniform is
    # compared against a sum over the whole candidate list, and lands near some boundary often.
    noise = torch.stack([torch.rand(vocab, generator=g) for g in generators]).to(logits.device)
    if order is not None:
        noise = noise.gather(-1, order)
    scores = values - torch.log(-torch.log(noise))  # a draw of exactly 0 scores -inf
    if top_p < 1.0:
        # The nucleus: the fewest top tokens whose probability reaches top_p (at least one).
        probs = (values - log_total).exp()
        kept = ((probs.cumsum(dim=-1) - probs) < top_p).sum(dim=-1).clamp(min=1)
        outside = torch.arange(values.shape[-1], device=values.device) >= kept[:, None]
        scores = scores.masked_fill(outside, float("-inf"))
    picks = scores.argmax(dim=-1)
    if order is None:
        return picks
    return order.gather(-1, picks[:, None]).squeeze(-1)
