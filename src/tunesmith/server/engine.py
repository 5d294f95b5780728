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

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

from tunesmith.model import GPT2, Segment
from tunesmith.sampling import apply_repetition_penalty, sample
from tunesmith.server.slots import MIN_COLUMNS, SlotCache


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


class DecodeBatch:
    """The sequences decoding together on the model, changing between steps.

    Row i of the batch lives in slot i of the cache and of every per-row tensor below (their
    first dimension is the slot count); rows [0, len(self)) are in use."""

    def __init__(self, model: GPT2, eos_id: int, initial_slots: int = 1):
        self.model, self.eos_id = model, eos_id
        self.vocab = model.config.vocab_size
        # The cache's first allocation holds this many rows: a batch growing one joiner at a
        # time to `initial_slots` then never reallocates and copies its cache (33 ms at 8 -> 16
        # rows of GPT-2 124M), however its rows come and go.
        self.initial_slots = initial_slots
        self._reset()

    def _reset(self) -> None:
        self.rows: list[_Row] = []
        self.width = 0  # cache columns in use; every row's last token sits at width - 1
        self.cache: SlotCache | None = None
        device = self.model.device
        self.mask = torch.zeros(0, 0, dtype=torch.bool, device=device)  # columns a row attends to
        self.pending = torch.zeros(0, dtype=torch.long, device=device)  # sampled, not yet cached
        self.positions = torch.zeros(0, dtype=torch.long, device=device)  # position of `pending`
        self.seen = torch.zeros(0, self.vocab, dtype=torch.bool, device=device)  # prompt + output
        self.counts = torch.zeros(0, self.vocab, device=device)  # generated tokens (penalties)

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
        """The group's prompts, left-padded to one length L, through the model into the slots
        after the batch's rows, right-aligned with them: logits (all positions or the last)
        and the (B, L) mask of real tokens."""
        prompts, mask = self._prompts(group)
        B, L = prompts.idx.shape
        first = len(self.rows)
        if first and L > self.width:
            self._shift(L - self.width)  # the batch's rows move right to make room on the left
        self.width = max(self.width, L)
        self._reserve(first + B, self.width)
        assert self.cache is not None
        prompts.cache = self.cache.window(first, B, self.width - L, L)
        logits = self.model(
            prompts.idx,
            0,
            prompts.cache,
            attention_mask=prompts.attention_mask,
            position_ids=prompts.position_ids,
            last_only=not all_logits,
        ).float()
        return logits, mask

    def _prompts(self, group: list[tuple[Hashable, SequenceSpec]]) -> tuple[Segment, torch.Tensor]:
        """The newcomers' prompts right-aligned (left-padded) in one (B, L) block, as a segment
        without its cache yet, and the (B, L) mask of their real tokens."""
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
        attention_mask = mask.long() if padded else None
        return Segment(idx, 0, None, attention_mask, positions), mask  # type: ignore[arg-type]

    def _admit_group(self, group: list[tuple[Hashable, SequenceSpec]]) -> list[Produced]:
        wants_prompt = group[0][1].prompt_logprobs is not None
        logits, mask = self._prefill(group, wants_prompt)
        prompt_lp = _prompt_logprobs(logits[0], group[0][1]) if wants_prompt else None
        out = self._join(group, mask, logits[:, -1], prompt_lp)
        self._remove({p.key for p in out if p.finish_reason is not None})
        return out

    def _join(
        self,
        group: list[tuple[Hashable, SequenceSpec]],
        mask: torch.Tensor,
        logits: torch.Tensor,
        prompt_lp: list[TokenLogprob] | None = None,
    ) -> list[Produced]:
        """Newcomers, prefilled into the next slots with their prompts' (B, L) mask ending at
        the batch's last column, become rows; each samples its first token from logits
        (B, vocab) (or ends at once, asked for none)."""
        first, B = len(self.rows), len(group)
        new = slice(first, first + B)
        self.mask[new] = False
        self.mask[new, self.width - mask.shape[1] : self.width] = mask
        self.positions[new] = mask.sum(-1)
        self.seen[new], self.counts[new] = False, 0
        for row, (_, spec) in enumerate(group):
            self.seen[first + row, torch.tensor(spec.prompt_ids, device=self.seen.device)] = True
        rows = [_Row(k, s, torch.Generator().manual_seed(s.seed)) for k, s in group]
        self.rows.extend(rows)
        assert self.cache is not None
        self.cache.rows = len(self.rows)
        keep = [i for i, r in enumerate(rows) if r.spec.max_new_tokens > 0]
        out = [
            Produced(r.key, None, None, prompt_lp, "length")
            for r in rows
            if r.spec.max_new_tokens == 0
        ]
        if keep:
            at = torch.tensor([first + i for i in keep], device=self.seen.device)
            sampled = [rows[i] for i in keep]
            produced, tokens = self._choose(logits[keep], sampled, self.seen[at], self.counts[at])
            for p in produced:
                p.prompt_logprobs = prompt_lp
            self._took(at, tokens)
            out.extend(produced)
        return out

    @torch.inference_mode()
    def step(
        self,
        joining: list[tuple[Hashable, SequenceSpec]] = (),
        joined: Callable[[list[Produced]], None] | None = None,
    ) -> list[Produced]:
        """One token for every running sequence; finished ones leave the batch.

        `joining` newcomers (none asking for prompt log-probabilities) are prefilled in the
        same forward pass, their prompts ending at the step's column, and sample their first
        tokens: the pass reads the weights once for both, where a prefill of its own would
        read them again. Their first tokens are drawn first and handed to `joined` (which must
        not change the batch) before the running rows' are drawn; the returned list holds the
        running rows' tokens only when `joined` is given."""
        if not self.rows:  # nothing running (it all left): the newcomers' own prefill
            first = self.admit(list(joining))
            if joined is None:
                return first
            joined(first)
            return []
        assert all(s.prompt_logprobs is None for _, s in joining)
        if self.width + 1 > self.mask.shape[1]:
            self._make_room()
        prompts, prompt_mask = self._prompts(list(joining)) if joining else (None, None)
        if prompts is not None:
            if prompts.idx.shape[1] > self.width + 1:
                self._shift(prompts.idx.shape[1] - self.width - 1)  # room on the left for them
            self._reserve(len(self.rows) + len(joining), self.width + 1)  # and their slots
        B, W = len(self.rows), self.width
        assert self.cache is not None
        self.mask[:B, W] = True
        mask = self.mask[:B, : W + 1]
        full = bool(mask.all())
        decoding = Segment(
            self.pending[:B, None],
            W,
            self.cache,
            attention_mask=None if full else mask.long(),
            position_ids=self.positions[:B, None],
        )
        if prompts is None:
            logits = self.model(
                decoding.idx,
                W,
                self.cache,
                attention_mask=decoding.attention_mask,
                position_ids=decoding.position_ids,
            )[:, -1].float()
        else:
            L = prompts.idx.shape[1]
            prompts.cache = self.cache.window(B, len(joining), W + 1 - L, L)
            states = self.model.forward_groups([decoding, prompts])
        self.width += 1
        self.positions[:B] += 1
        first: list[Produced] = []
        if prompts is not None:
            # Every row's logits from one read of the LM head (a second read for the newcomers
            # alone cost more than it saved them); the newcomers' first tokens are drawn first.
            everyone = self.model.lm_head(states).float()
            first = self._join(list(joining), prompt_mask, everyone[B:])
            if joined is not None:
                joined(first)
            logits = everyone[:B]
        running = self.rows[:B]
        produced, tokens = self._choose(logits, running, self.seen[:B], self.counts[:B])
        self._took(torch.arange(B, device=tokens.device), tokens)
        self._remove({p.key for p in first + produced if p.finish_reason is not None})
        return produced if joined is not None else produced + first

    def _took(self, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        """Rows (slot indices) sampled tokens: the next step feeds them in."""
        self.pending[rows] = tokens
        self.counts[rows, tokens] += 1
        self.seen[rows, tokens] = True

    @torch.inference_mode()  # the batch's tensors are inference tensors, updated in place
    def drop(self, keys: list[Hashable]) -> None:
        """Sequences leave the batch (finished, stopped by a stop string, or abandoned)."""
        self._remove(set(keys))

    def _remove(self, gone: set) -> None:
        """The last row takes each leaving row's slot: one row moves, not the batch."""
        leaving = [i for i, r in enumerate(self.rows) if r.key in gone]
        if not leaving:
            return
        if len(leaving) == len(self.rows):
            self._reset()
            return
        assert self.cache is not None
        for i in reversed(leaving):
            last = len(self.rows) - 1
            if i != last:
                self._move_row(last, i)
            self.rows[i] = self.rows[last]
            self.rows.pop()
            self.cache.rows = len(self.rows)
        first = self._first_used()
        if first >= max(MIN_COLUMNS, self.width // 2):  # reclaim columns once half are unused
            self._shift(-first)

    def _move_row(self, source: int, target: int) -> None:
        assert self.cache is not None
        used = self.mask[source, : self.width].nonzero()
        self.cache.move_row(source, target, int(used[0]) if len(used) else 0, self.width)
        for t in (self.mask, self.pending, self.positions, self.seen, self.counts):
            t[target] = t[source]

    def _first_used(self) -> int:
        used = self.mask[: len(self.rows), : self.width].any(dim=0).nonzero()
        return int(used[0]) if len(used) else self.width

    def _shift(self, by: int) -> None:
        """Move the batch's used columns `by` columns (right when positive)."""
        assert self.cache is not None
        first, W, B = self._first_used(), self.width, len(self.rows)
        self._reserve(B, W + by)
        self.cache.shift(first, W, by)
        self.mask[:B, first + by : W + by] = self.mask[:B, first:W].clone()
        vacated = slice(first, first + by) if by > 0 else slice(W + by, W)
        self.mask[:B, vacated] = False
        self.width += by

    def _make_room(self) -> None:
        """A column for the next step: reclaim unused leading columns, or double."""
        assert self.cache is not None
        first = self._first_used()
        if first >= self.width // 2 or self.cache.max_len == self.cache.context:
            assert first > 0, "a row longer than the context"
            self._shift(-first)
        self._reserve(len(self.rows), self.width + 1)

    def _reserve(self, rows: int, columns: int) -> None:
        """Room for `rows` slots and `columns` columns in the cache and the per-row tensors."""
        if self.cache is None:
            config, model = self.model.config, self.model
            width = min(columns + MIN_COLUMNS, config.n_positions)
            slots = max(rows, self.initial_slots)
            self.cache = SlotCache(config, slots, width, model.device, model.dtype)
        self.cache.reserve(rows, columns)
        slots, width = self.cache.slots, self.cache.max_len
        if self.mask.shape != (slots, width):
            B, C = len(self.rows), self.mask.shape[1]
            mask = self.mask.new_zeros(slots, width)
            mask[:B, :C] = self.mask[:B]
            self.mask = mask
        if self.pending.shape[0] != slots:
            self.pending, self.positions, self.seen, self.counts = (
                _grown(t, slots, len(self.rows))
                for t in (self.pending, self.positions, self.seen, self.counts)
            )

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


def _grown(t: torch.Tensor, slots: int, rows: int) -> torch.Tensor:
    """t with `slots` rows, the first `rows` copied."""
    new = t.new_zeros(slots, *t.shape[1:])
    new[:rows] = t[:rows]
    return new
