"""Pure functions that turn next-token logits into tokens.

Each row of a batch samples with its own torch.Generator, so a sample depends only on its own
seed, never on which other samples share its batch (the server batches requests together).
"""

from __future__ import annotations

import math

import torch

from tunesmith import fused


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


HISTOGRAM_BINS = 1024  # top-p bins the vocabulary by probability to find its nucleus
# Top-p on the CPU draws from the whole vocabulary until a draw lands in the nucleus; at top-p
# 0.9 one in ten misses, and after this many the nucleus is found and drawn from directly.
DRAWS_BEFORE_THRESHOLD = 3


def sample(
    logits: torch.Tensor,
    generators: list[torch.Generator],
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """Next tokens (B,) from logits (B, vocab); temperature 0 means greedy.

    Nothing sorts the whole vocabulary on the CPU, where a 50k sort costs a tenth of a GPT-2
    step: top-k takes the k best; top-p draws until a draw lands in the nucleus, or finds the
    nucleus's threshold from a histogram.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    vocab = logits.shape[-1]
    order = None  # candidate token ids, best first, when not the whole vocabulary
    if 0 < top_k < vocab:
        logits, order = torch.topk(logits, top_k, dim=-1)
    if logits.device.type != "cpu":
        return _sample_rows(logits, generators, vocab, top_p, order)
    if order is None and fused.takes_sample(logits):
        return _fused_draws(logits, generators, vocab, top_p)
    # Row by row on the CPU: a row's 50k numbers stay in the core's cache through the passes
    # below, where the whole batch's would not (about 1.3x faster at 12 rows).
    picks = [
        _sample_rows(
            logits[i : i + 1],
            generators[i : i + 1],
            vocab,
            top_p,
            None if order is None else order[i : i + 1],
        )
        for i in range(len(generators))
    ]
    return torch.cat(picks)


def _fused_draws(
    logits: torch.Tensor, generators: list[torch.Generator], vocab: int, top_p: float
) -> torch.Tensor:
    """Every row's Gumbel-max draw and top-p check in one call of fused.c, the rows shared
    among the threads (16 rows one by one took 3.5 ms of a 47 ms step). A row whose draws miss
    the nucleus DRAWS_BEFORE_THRESHOLD times finds it instead: each row's generator gives the
    same seeds in the same order as one row alone would."""
    picks = fused.gumbel_picks(logits, generators, top_p)
    for _ in range(DRAWS_BEFORE_THRESHOLD - 1):
        missed = [i for i, pick in enumerate(picks) if pick is None]
        if not missed:
            break
        again = fused.gumbel_picks(logits[missed], [generators[i] for i in missed], top_p)
        for i, pick in zip(missed, again, strict=True):
            picks[i] = pick
    for i, pick in enumerate(picks):
        if pick is None:
            row = logits[i : i + 1]
            picks[i] = int(_sample_rows(row, generators[i : i + 1], vocab, top_p, None, True)[0])
    return torch.tensor(picks, device=logits.device)


def _sample_rows(
    logits: torch.Tensor,
    generators: list[torch.Generator],
    vocab: int,
    top_p: float,
    order: torch.Tensor | None,
    drew: bool = False,
) -> torch.Tensor:
    """sample() after temperature and top-k: top-p, then one Gumbel-max draw per row. `drew`:
    draws that had to land in the nucleus missed already; find it."""
    if top_p < 1.0:
        if order is None and logits.device.type == "cpu" and len(generators) == 1 and not drew:
            pick = _draw_in_nucleus(logits, generators[0], top_p)
            if pick is not None:
                return pick
        log_probs = logits.log_softmax(dim=-1)
        probs = log_probs.exp()
        if order is None:
            outside = probs < _nucleus_threshold(probs, top_p, log_probs)
        else:
            # Candidates are sorted: the nucleus is the fewest first ones reaching top_p.
            kept = ((probs.cumsum(dim=-1) - probs) < top_p).sum(dim=-1, keepdim=True)
            outside = torch.arange(probs.shape[-1], device=probs.device) >= kept.clamp(min=1)
        logits = logits.masked_fill(outside, float("-inf"))
    return _gumbel_max(logits, generators, vocab, order)


def _draw_in_nucleus(
    logits: torch.Tensor, generator: torch.Generator, top_p: float
) -> torch.Tensor | None:
    """Top-p for one row (1, vocab) without finding the nucleus first, or None after
    DRAWS_BEFORE_THRESHOLD misses. A draw from the whole distribution that lands in the nucleus
    is a draw from the nucleus, renormalised, and it lands there with the nucleus's probability
    (at least top_p). Checking a draw takes one pass: a token is in the nucleus exactly when
    the tokens likelier than it hold less than top_p. Half the work of the threshold."""
    probs = logits.softmax(dim=-1)
    for _ in range(DRAWS_BEFORE_THRESHOLD):
        pick = _gumbel_max(logits, [generator], logits.shape[-1], None)
        p = probs[0, pick]
        if float(torch.where(probs > p, probs, 0.0).sum()) < top_p:
            return pick
    return None


def _gumbel_max(
    logits: torch.Tensor, generators: list[torch.Generator], vocab: int, order: torch.Tensor | None
) -> torch.Tensor:
    """One draw per row from softmax(logits): the argmax of logits plus Gumbel noise.

    The noise is keyed by token id: a token's score moves only as much as its own logit does,
    so the last-bit differences that batching (left padding) makes to the logits practically
    never change the pick. An inverse-CDF draw did: its one uniform is compared against a sum
    over the whole candidate list, and lands near some boundary often."""
    noise = torch.empty(len(generators), vocab)
    for row, g in zip(noise, generators, strict=True):
        row.uniform_(generator=g)  # what torch.rand(vocab, generator=g) draws
    noise = noise.to(logits.device)
    if order is not None:
        noise = noise.gather(-1, order)
    scores = logits - noise.log_().neg_().log_()  # log(-log(u)); a draw of exactly 0: -inf
    picks = scores.argmax(dim=-1)
    if order is None:
        return picks
    return order.gather(-1, picks[:, None]).squeeze(-1)


def _nucleus_threshold(
    probs: torch.Tensor, top_p: float, log_probs: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, 1): the probability t of the last token in the nucleus (the fewest most likely
    tokens holding top_p of the mass), so that the nucleus is the tokens with probability >= t.

    Without sorting the vocabulary: the log-probabilities are binned (HISTOGRAM_BINS, evenly
    spaced), the bin where the mass from the top reaches top_p is found from per-bin sums, and
    only that bin's few tokens are sorted. Row by row: a row's 50k numbers stay in the core's
    cache through the dozen passes, where the batch's (B, 50k) as a whole would not.
    """
    if probs.device.type != "cpu":  # a GPU sorts 50k numbers in microseconds
        ranked = probs.sort(dim=-1, descending=True).values
        kept = ((ranked.cumsum(dim=-1) - ranked) < top_p).sum(dim=-1, keepdim=True)
        return ranked.gather(-1, kept.clamp(min=1) - 1)
    tiny = torch.finfo(probs.dtype).tiny
    if log_probs is None:
        log_probs = probs.clamp(min=tiny).log()
    else:  # a token ruled out (-inf) joins the least likely bin, as a tiny probability would
        log_probs = log_probs.clamp(min=math.log(tiny))
    rows = [_row_threshold(p, lp, top_p) for p, lp in zip(probs, log_probs, strict=True)]
    return torch.stack(rows)[:, None]


def _row_threshold(probs: torch.Tensor, log_probs: torch.Tensor, top_p: float) -> torch.Tensor:
    low, high = log_probs.aminmax()
    # Bin 0 holds the least likely tokens; the arithmetic is monotone, which is all it needs.
    scale = HISTOGRAM_BINS / max(float(high - low), 1e-30)
    bins = ((log_probs - low) * scale).long().clamp_(0, HISTOGRAM_BINS - 1)
    mass = torch.zeros(HISTOGRAM_BINS, dtype=probs.dtype).index_add_(0, bins, probs)
    from_top = mass.flip(0).cumsum(0)
    crossing = int((from_top < top_p).sum().clamp(max=HISTOGRAM_BINS - 1))
    boundary = HISTOGRAM_BINS - 1 - crossing
    needed = top_p - float(from_top[crossing] - mass[boundary])  # still to take from this bin
    members = probs[bins == boundary].sort(descending=True).values
    take = int(((members.cumsum(0) - members) < needed).sum().clamp(min=1))
    return members[take - 1]
