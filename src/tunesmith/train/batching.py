"""Turn texts into training batches: tokenize with `<|endoftext|>`, pack, and order by seed + epoch.

Two packings:
- `examples`: each example is its own sequence `<eos> tokens <eos>` (the model learns how a text
  starts and where it ends), batched with examples of similar length and right-padded; padding
  gets label -100, so it costs little compute and no loss.
- `blocks`: everything concatenated, `<eos>` between examples, cut into block-size chunks (what
  `run_lm_finetuning.py` did).

The order of an epoch depends only on (seed, epoch), so a resumed run finds its place again from
(epoch, step in epoch). A step's examples form one global batch that is split across devices and
micro-batches, so the global batch is the same for any number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunesmith.model import IGNORE_INDEX as IGNORE  # label of positions without a loss (padding)

COMPILE_PAD_MULTIPLE = 8  # with torch.compile: fewer distinct shapes, so fewer recompilations
BUCKET_BATCHES = 50  # sort by length within windows of this many global batches


@dataclass
class Batch:
    inputs: torch.Tensor  # (B, T) token ids
    labels: torch.Tensor  # (B, T) next-token targets, IGNORE on padding

    @property
    def num_targets(self) -> int:
        return int((self.labels != IGNORE).sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.inputs.to(device, non_blocking=True), self.labels.to(device))


def tokenize_examples(
    tokenizer, texts: list[str], eos_id: int, max_len: int
) -> tuple[list[list[int]], int]:
    """`<eos> tokens <eos>` per text, cut to max_len + 1 tokens (max_len inputs, max_len
    targets); returns the sequences and how many texts were cut."""
    sequences, cut = [], 0
    for ids in tokenizer.encode_batch(texts):
        seq = [eos_id, *ids, eos_id]
        if len(seq) > max_len + 1:
            seq, cut = seq[: max_len + 1], cut + 1
        sequences.append(seq)
    return sequences, cut


def pack_blocks(sequences: list[list[int]], block_size: int) -> list[list[int]]:
    """Concatenate (sharing the `<eos>` between neighbours) and cut into block_size + 1 windows
    that overlap by one token, so every token is a target exactly once."""
    stream: list[int] = []
    for seq in sequences:
        stream.extend(seq[1:] if stream else seq)
    n_blocks = (len(stream) - 1) // block_size
    if n_blocks == 0 and len(stream) > 1:
        return [stream]  # less than one block of data: train on what there is
    return [stream[i * block_size : (i + 1) * block_size + 1] for i in range(n_blocks)]


class BatchPlan:
    """The fixed, reproducible order of global batches for each epoch."""

    def __init__(
        self,
        sequences: list[list[int]],
        global_batch: int,
        seed: int,
        bucket: bool,
        pad_id: int,
        pad_multiple: int = 1,
    ):
        """pad_multiple 1 pads each batch to its longest sequence: on short texts, rounding
        lengths up to a multiple of 8 would add ~15% of padding."""
        self.sequences = sequences
        self.pad_multiple = pad_multiple
        self.global_batch = global_batch
        self.seed = seed
        self.bucket = bucket
        self.pad_id = pad_id

    def __len__(self) -> int:
        """Global batches per epoch (the last, smaller one included)."""
        return -(-len(self.sequences) // self.global_batch)

    def num_targets(self) -> int:
        return sum(len(s) - 1 for s in self.sequences)

    def epoch(self, epoch: int) -> list[list[int]]:
        """Example indices of each global batch of `epoch`, in training order."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.sequences), generator=g).tolist()
        if self.bucket:
            window = self.global_batch * BUCKET_BATCHES
            order = [
                i
                for start in range(0, len(order), window)
                for i in sorted(order[start : start + window], key=lambda j: len(self.sequences[j]))
            ]
        batches = [
            order[i : i + self.global_batch] for i in range(0, len(order), self.global_batch)
        ]
        if self.bucket:
            # Sorting made neighbours similar in length; shuffle which batch comes when.
            perm = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[i] for i in perm]
        return batches

    def micro_batches(self, indices: list[int], parts: int) -> list[list[int]]:
        """Split one global batch into `parts` micro-batches of similar lengths; part j goes to
        rank j % world_size as its (j // world_size)-th accumulation step."""
        ordered = sorted(indices, key=lambda j: len(self.sequences[j]))
        size = -(-len(ordered) // parts)
        return [ordered[k * size : (k + 1) * size] for k in range(parts)]

    def collate(self, indices: list[int]) -> Batch | None:
        if not indices:
            return None
        seqs = [self.sequences[i] for i in indices]
        T = max(len(s) for s in seqs) - 1
        m = self.pad_multiple
        T = min(-(-T // m) * m, max(len(s) for s in self.sequences) - 1)
        inputs = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        labels = torch.full((len(seqs), T), IGNORE, dtype=torch.long)
        for row, seq in enumerate(seqs):
            n = len(seq) - 1
            inputs[row, :n] = torch.tensor(seq[:-1])
            labels[row, :n] = torch.tensor(seq[1:])
        return Batch(inputs, labels)
