"""Batching: `<eos>` framing, padding without loss, blocks, and a reproducible order."""

import torch

from tunesmith.tokenizer import GPT2Tokenizer
from tunesmith.train.batching import IGNORE, BatchPlan, pack_blocks, tokenize_examples


def test_examples_are_framed_by_eos_and_cut_to_the_block(gpt2_vocab_dir):
    tok = GPT2Tokenizer.from_folder(gpt2_vocab_dir)
    eos = tok.eos_id
    seqs, cut = tokenize_examples(tok, ["Hello world", "a " * 50], eos, max_len=10)
    assert seqs[0] == [eos, *tok.encode("Hello world"), eos]
    assert len(seqs[1]) == 11 and cut == 1


def test_padding_carries_no_loss_and_labels_are_next_tokens():
    seqs = [[0, 5, 6, 0], [0, 7, 0], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]]
    plan = BatchPlan(seqs, global_batch=2, seed=0, bucket=True, pad_id=0)
    batch = plan.collate([0, 1])
    assert batch.inputs.shape == (2, 3)  # padded to the longest of the batch
    compiled = BatchPlan(seqs, global_batch=2, seed=0, bucket=True, pad_id=0, pad_multiple=8)
    assert compiled.collate([0, 1]).inputs.shape == (2, 8)  # capped by the longest overall
    assert batch.inputs[0, :3].tolist() == [0, 5, 6]
    assert batch.labels[0, :3].tolist() == [5, 6, 0]
    assert (batch.labels[0, 3:] == IGNORE).all() and (batch.labels[1, 2:] == IGNORE).all()
    assert batch.num_targets == 5


def test_blocks_cover_every_token_once():
    seqs = [[0, 1, 2, 0], [0, 3, 4, 5, 0], [0, 6, 0]]
    blocks = pack_blocks(seqs, block_size=3)
    stream = [0, 1, 2, 0, 3, 4, 5, 0, 6, 0]
    assert blocks == [stream[0:4], stream[3:7], stream[6:10]]


def test_epoch_order_depends_only_on_seed_and_epoch():
    seqs = [[0] * (2 + i % 7) for i in range(100)]
    a = BatchPlan(seqs, 8, seed=1, bucket=True, pad_id=0)
    b = BatchPlan(seqs, 8, seed=1, bucket=True, pad_id=0)
    assert a.epoch(3) == b.epoch(3)
    assert a.epoch(3) != a.epoch(4)
    assert sorted(i for batch in a.epoch(2) for i in batch) == list(range(100))
    assert len(a) == 13


def test_buckets_keep_padding_low():
    torch.manual_seed(0)
    seqs = [[0] * int(n) for n in torch.randint(3, 60, (400,))]
    plan = BatchPlan(seqs, 8, seed=0, bucket=True, pad_id=0)
    padded = sum(plan.collate(ix).inputs.numel() for ix in plan.epoch(0))
    assert padded < 1.1 * plan.num_targets()


def test_micro_batches_split_a_global_batch_without_loss():
    seqs = [[0] * (2 + i) for i in range(10)]
    plan = BatchPlan(seqs, 10, seed=0, bucket=True, pad_id=0)
    parts = plan.micro_batches(list(range(10)), 4)
    assert sorted(i for p in parts for i in p) == list(range(10))
    assert len(parts) == 4
