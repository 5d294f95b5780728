"""Continuous batching on the model: sequences join a running batch between decode steps.

`DecodeBatch.admit` prefills newcomers (their prompts through the model, their first token
sampled) and merges them into the batch; `step` decodes one token for every running sequence;
`drop` lets finished or abandoned sequences leave. The batch's KV cache is right-aligned: every
row ends at the same column, so one `input_pos` serves all rows and each step is one forward
call; a row's earlier columns that hold nothing (it joined later, or has a shorter prompt) are
masked out, and its positions count its own tokens only. Rows sample with their own seeded
generator (tunesmith.sampling), so a sequence's tokens do not depend on who shares its batch.

Log-probabilities are those of the model's distribution (log_softmax of its logits, before
penalties, biases or temperature), as OpenAI and vLLM report them.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

from tunesmith.model import GPT2, GPT2Config, KVCache
from tunesmith.sampling import apply_repetition_penalty, sample

GROWTH = 64  # cache columns added at a time


@dataclass(frozen=True)
class Sampling:
    """How one sequence picks its tokens (the request's knobs, already validated)."""

    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    min_tokens: int = 0  # eos and stop_token_ids are masked until this many tokens
    ignore_eos: bool = False
    stop_token_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class SequenceSpec:
    """One sequence to decode: its prompt, budget, sampling, seed and what to report."""

    prompt_ids: tuple[int, ...]
    max_new_tokens: int  # 0: score the prompt only
    sampling: Sampling = Sampling()
    seed: int = 0
    logprobs: int | None = None  # top alternatives per generated token; None: no logprobs
    prompt_logprobs: int | None = None  # the same for the prompt's tokens (echo)


@dataclass
class TokenLogprob:
    token: int
    logprob: float | None  # None for the first prompt token, which nothing predicts
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Produced:
    """What one sequence produced in one admit or step."""

    key: Hashable
    token: int | None  # None: nothing generated (max_new_tokens 0)
    logprob: TokenLogprob | None = None
    prompt_logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # "eos", "stop" (a stop token) or "length"


@dataclass
class _Row:
    key: Hashable
    spec: SequenceSpec
    generator: torch.Generator
    generated: int = 0


class GrowableCache(KVCache):
    """A KV cache that widens as decoding goes on, for a batch whose end is not known."""

    def update(self, layer: int, input_pos: int, k: torch.Tensor, v: torch.Tensor):
        end = input_pos + k.shape[2]
        if end > self.max_len:
            self.widen(end + GROWTH)
        return super().update(layer, input_pos, k, v)

    def widen(self, max_len: int, left: int = 0) -> None:
        """Make room for max_len columns, adding `left` empty columns before the old ones."""
        B, H, _, D = self.keys[0].shape
        right = max_len - left - self.max_len
        assert left >= 0 and right >= 0, "widen() only adds columns"
        if left == right == 0:
            return
        like = self.keys[0]
        pad = [like.new_zeros(B, H, n, D) for n in (left, right)]
        self.keys = [torch.cat([pad[0], k, pad[1]], dim=2) for k in self.keys]
        self.values = [torch.cat([pad[0], v, pad[1]], dim=2) for v in self.values]
        self.max_len = max_len

    def drop_columns(self, first: int) -> None:
        """Forget columns before `first` (no row uses them any more)."""
        self.keys = [k[:, :, first:].contiguous() for k in self.keys]
        self.values = [v[:, :, first:].contiguous() for v in self.values]
        self.max_len -= first

    def append_rows(self, other: GrowableCache) -> None:
        self.keys = [torch.cat([a, b]) for a, b in zip(self.keys, other.keys, strict=True)]
        self.values = [torch.cat([a, b]) for a, b in zip(self.values, other.values, strict=True)]


def _new_cache(config: GPT2Config, rows: int, width: int, model: GPT2) -> GrowableCache:
    return GrowableCache(config, rows, min(width, config.n_positions), model.device, model.dtype)


class DecodeBatch:
    """The sequences decoding together on the model, changing between steps."""

    def __init__(self, model: GPT2, eos_id: int):
        self.model, self.eos_id = model, eos_id
        self.vocab = model.config.vocab_size
        self._reset()

    def _reset(self) -> None:
        self.rows: list[_Row] = []
        self.width = 0  # cache columns in use; every row's last token sits at width - 1
        self.cache: GrowableCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.bool)  # (B, width): columns a row attends to
        self.pending = torch.zeros(0, dtype=torch.long)  # (B,) sampled, not yet in the cache
        self.positions = torch.zeros(0, dtype=torch.long)  # (B,) position of `pending`
        self.seen = torch.zeros(0, self.vocab, dtype=torch.bool)  # prompt + generated tokens
        self.counts = torch.zeros(0, self.vocab)  # generated tokens, for the penalties

    def __len__(self) -> int:
        return len(self.rows)

    @torch.inference_mode()
    def admit(self, specs: list[tuple[Hashable, SequenceSpec]]) -> list[Produced]:
        """Prefill newcomers and sample their first tokens; those still running join."""
        out: list[Produced] = []
        scored = [(k, s) for k, s in specs if s.prompt_logprobs is not None]
        plain = [(k, s) for k, s in specs if s.prompt_logprobs is None]
        # Prompt log-probabilities need logits at every position: (T, vocab) each, so one by one.
        groups = [[item] for item in scored] + ([plain] if plain else [])
        for group in groups:
            out.extend(self._admit_group(group))
        return out

    def _prefill(self, group: list[tuple[Hashable, SequenceSpec]], all_logits: bool):
        """The group's prompts, left-padded to one length, through the model: logits (all
        positions or the last), their cache and the (B, L) mask of real tokens."""
        B, L = len(group), max(len(s.prompt_ids) for _, s in group)
        idx = torch.full((B, L), self.eos_id, dtype=torch.long)
        mask = torch.zeros((B, L), dtype=torch.bool)
        for row, (_, spec) in enumerate(group):
            n = len(spec.prompt_ids)
            idx[row, L - n :] = torch.tensor(spec.prompt_ids)
            mask[row, L - n :] = True
        padded = not bool(mask.all())
        idx, mask = idx.to(self.model.device), mask.to(self.model.device)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # padding takes no positions
        cache = _new_cache(self.model.config, B, L + GROWTH, self.model)
        logits = self.model(
            idx,
            0,
            cache,
            attention_mask=mask.long() if padded else None,
            position_ids=positions,
            last_only=not all_logits,
        ).float()
        return logits, cache, mask

    def _admit_group(self, group: list[tuple[Hashable, SequenceSpec]]) -> list[Produced]:
        device, B = self.model.device, len(group)
        wants_prompt = group[0][1].prompt_logprobs is not None
        logits, cache, mask = self._prefill(group, wants_prompt)
        rows = [_Row(k, s, torch.Generator().manual_seed(s.seed)) for k, s in group]
        prompt_lp = _prompt_logprobs(logits[0], group[0][1]) if wants_prompt else None
        seen = torch.zeros(B, self.vocab, dtype=torch.bool, device=device)
        for row, (_, spec) in enumerate(group):
            seen[row, torch.tensor(spec.prompt_ids, device=device)] = True
        counts = torch.zeros(B, self.vocab, device=device)
        keep = [i for i, r in enumerate(rows) if r.spec.max_new_tokens > 0]
        out = [
            Produced(r.key, None, None, prompt_lp, "length")
            for i, r in enumerate(rows)
            if i not in keep
        ]
        if not keep:
            return out
        last = logits[:, -1][keep]
        sampled = [rows[i] for i in keep]
        produced, tokens = self._choose(last, sampled, seen[keep], counts[keep])
        for p in produced:
            p.prompt_logprobs = prompt_lp
        out.extend(produced)
        running = [i for i, p in zip(keep, produced, strict=True) if p.finish_reason is None]
        if running:
            at = [keep.index(i) for i in running]
            rows_t = torch.tensor(running, device=device)
            cache.keep_rows(rows_t)
            counts = counts[rows_t]
            counts[torch.arange(len(at), device=device), tokens[at]] += 1
            seen = seen[rows_t]
            seen[torch.arange(len(at), device=device), tokens[at]] = True
            self._merge(
                [rows[i] for i in running],
                cache,
                mask[rows_t],
                mask.shape[1],
                tokens[at],
                mask[rows_t].sum(-1),
                seen,
                counts,
            )
        return out

    def _merge(self, rows, cache, mask, width, pending, positions, seen, counts) -> None:
        """Right-align the newcomers' block of `width` columns with the batch's and stack."""
        if not self.rows:
            self.rows, self.cache, self.width = rows, cache, width
            self.mask, self.pending, self.positions = mask, pending, positions
            self.seen, self.counts = seen, counts
            return
        assert self.cache is not None
        W = max(self.width, width)
        self._pad_left(W - self.width)
        capacity = max(self.cache.max_len, cache.max_len + W - width)
        self.cache.widen(capacity)
        cache.widen(capacity, left=W - width)
        mask = torch.nn.functional.pad(mask, (W - width, 0))
        self.cache.append_rows(cache)
        self.rows = self.rows + rows
        self.mask = torch.cat([self.mask, mask])
        self.pending = torch.cat([self.pending, pending])
        self.positions = torch.cat([self.positions, positions])
        self.seen = torch.cat([self.seen, seen])
        self.counts = torch.cat([self.counts, counts])

    def _pad_left(self, n: int) -> None:
        if n <= 0:
            return
        assert self.cache is not None
        self.cache.widen(self.cache.max_len + n, left=n)
        self.mask = torch.nn.functional.pad(self.mask, (n, 0))
        self.width += n

    @torch.inference_mode()
    def step(self) -> list[Produced]:
        """One token for every running sequence; finished ones leave the batch."""
        if not self.rows:
            return []
        if self.width + 1 > self.model.config.n_positions:
            self._compact()
        W = self.width
        self.mask = torch.nn.functional.pad(self.mask, (0, 1), value=True)
        full = bool(self.mask.all())
        logits = self.model(
            self.pending[:, None],
            W,
            self.cache,
            attention_mask=None if full else self.mask.long(),
            position_ids=self.positions[:, None],
        )[:, -1].float()
        self.width += 1
        self.positions = self.positions + 1
        produced, tokens = self._choose(logits, self.rows, self.seen, self.counts)
        rows = torch.arange(len(self.rows), device=tokens.device)
        self.counts[rows, tokens] += 1
        self.seen[rows, tokens] = True
        self.pending = tokens
        self.drop([p.key for p in produced if p.finish_reason is not None])
        return produced

    def drop(self, keys: list[Hashable]) -> None:
        """Sequences leave the batch (finished, stopped by a stop string, or abandoned)."""
        gone = set(keys)
        keep = [i for i, r in enumerate(self.rows) if r.key not in gone]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self._reset()
            return
        assert self.cache is not None
        rows = torch.tensor(keep, device=self.mask.device)
        self.cache.keep_rows(rows)
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.pending = self.mask[rows], self.pending[rows]
        self.positions = self.positions[rows]
        self.seen, self.counts = self.seen[rows], self.counts[rows]
        self._compact()

    def _compact(self) -> None:
        """Drop the leading columns no row uses (left behind by rows that left)."""
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else self.width
        if first > 0 and self.cache is not None:
            self.cache.drop_columns(first)
            self.mask = self.mask[:, first:]
            self.width -= first

    def _choose(
        self, logits, rows: list[_Row], seen, counts
    ) -> tuple[list[Produced], torch.Tensor]:
        """Sample each row's next token from logits (B, vocab); report it and whether it ends."""
        report = any(r.spec.logprobs is not None for r in rows)
        logprobs = torch.log_softmax(logits, dim=-1) if report else None
        tokens = _pick(_processed(logits, rows, seen, counts, self.eos_id), rows)
        produced = []
        for i, row in enumerate(rows):
            token = int(tokens[i])
            row.generated += 1
            lp = None
            if row.spec.logprobs is not None and logprobs is not None:
                lp = _token_logprob(logprobs[i], token, row.spec.logprobs)
            produced.append(Produced(row.key, token, lp, None, _finish(row, token, self.eos_id)))
        return produced, tokens


def _finish(row: _Row, token: int, eos_id: int) -> str | None:
    s = row.spec.sampling
    if token == eos_id and not s.ignore_eos:
        return "eos"
    if token in s.stop_token_ids:
        return "stop"
    if row.generated >= row.spec.max_new_tokens:
        return "length"
    return None


def _processed(logits, rows: list[_Row], seen, counts, eos_id: int) -> torch.Tensor:
    """Logits after each row's penalties, bias and min_tokens mask (only where some row asks)."""
    settings = [r.spec.sampling for r in rows]
    device = logits.device
    if any(s.repetition_penalty != 1.0 for s in settings):
        penalties = torch.tensor([s.repetition_penalty for s in settings], device=device)
        logits = apply_repetition_penalty(logits, seen, penalties[:, None])
    if any(s.presence_penalty or s.frequency_penalty for s in settings):
        presence = torch.tensor([s.presence_penalty for s in settings], device=device)[:, None]
        frequency = torch.tensor([s.frequency_penalty for s in settings], device=device)[:, None]
        logits = logits - presence * (counts > 0) - frequency * counts
    if any(s.logit_bias for s in settings) or any(
        r.generated < r.spec.sampling.min_tokens for r in rows
    ):
        logits = logits.clone()
        for i, (row, s) in enumerate(zip(rows, settings, strict=True)):
            for token, bias in s.logit_bias:
                logits[i, token] += bias
            if row.generated < s.min_tokens:
                banned = set(s.stop_token_ids) | (set() if s.ignore_eos else {eos_id})
                logits[i, list(banned)] = float("-inf")
    return logits


def _pick(logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
    """Sample rows that share temperature/top-k/top-p together, each with its own generator."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        s = r.spec.sampling
        groups.setdefault((s.temperature, s.top_k, s.top_p), []).append(i)
    tokens = torch.empty(len(rows), dtype=torch.long, device=logits.device)
    for (temperature, top_k, top_p), members in groups.items():
        at = torch.tensor(members, device=logits.device)
        gens = [rows[i].generator for i in members]
        tokens[at] = sample(logits[at], gens, temperature, top_k, top_p)
    return tokens


def _token_logprob(logprobs: torch.Tensor, token: int, top: int) -> TokenLogprob:
    best = []
    if top > 0:
        values, ids = logprobs.topk(top)
        best = [(int(t), float(v)) for t, v in zip(ids, values, strict=True)]
    return TokenLogprob(token, float(logprobs[token]), best)


def _prompt_logprobs(logits: torch.Tensor, spec: SequenceSpec) -> list[TokenLogprob]:
    """(T, vocab) logits of one prompt: each prompt token's log-probability given the ones
    before it; the first token has none."""
    ids = list(spec.prompt_ids)
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    out = [TokenLogprob(ids[0], None)]
    top = spec.prompt_logprobs or 0
    for i, token in enumerate(ids[1:]):
        out.append(_token_logprob(logprobs[i], token, top))
    return out
