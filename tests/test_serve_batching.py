"""Continuous batching: sequences that join a running batch at a later step, with prompts of
other lengths and other sampling settings, produce exactly the tokens they produce alone (as
`TextGenerator.generate` decodes them, through tunesmith.decoding); on a live server, a request
that arrives while another decodes joins it at the next step and gets the text it gets alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch

from tunesmith.decoding import DecodingSequence, SamplingSettings, decode
from tunesmith.generate import TextGenerator
from tunesmith.model import GPT2, GPT2Config
from tunesmith.server import CompletionServer, ServerConfig
from tunesmith.server.engine import DecodeBatch, Sampling, SequenceSpec

SETTINGS = [
    dict(temperature=0.8, top_p=0.9),
    dict(temperature=0.0, top_p=1.0),
    dict(temperature=1.0, top_k=20, top_p=1.0, repetition_penalty=1.3),
    dict(temperature=0.7, top_p=1.0),
    dict(temperature=1.0, top_p=0.5, repetition_penalty=0.8),
]
PROMPTS = [(5, 6, 7), (9,), (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11), (63,), (30, 31)]
EOS = 63


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    return TextGenerator.load(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def small_model():
    """A GPT-2 with a 64-token vocabulary and a 40-token context: quick to decode many steps."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=40, n_embd=32, n_layer=2, n_head=2)
    return GPT2(config).eval()


def alone(model, i: int, length: int) -> list[int]:
    """Sequence i decoded by itself, as `TextGenerator.generate` decodes it."""
    settings = SamplingSettings(length, ignore_eos=True, **SETTINGS[i])
    seq = DecodingSequence.start(list(PROMPTS[i]), settings, 50 + i)
    for _ in decode(model, [seq], EOS):
        pass
    return seq.new_ids


def spec(i: int, length: int) -> SequenceSpec:
    return SequenceSpec(PROMPTS[i], length, Sampling(ignore_eos=True, **SETTINGS[i]), 50 + i)


def test_sequences_joining_at_later_steps_get_what_they_get_alone(small_model):
    lengths = [24, 6, 26, 12, 18]  # some leave while others join
    batch = DecodeBatch(small_model, EOS)
    out: dict[int, list[int]] = {i: [] for i in range(5)}
    finished = set()

    def take(produced) -> None:
        for p in produced:
            out[p.key].append(p.token)
            if p.finish_reason is not None:
                finished.add(p.key)

    joins = {0: [0], 3: [1, 2], 9: [3], 14: [4]}  # step -> sequences that join before it
    for step in range(80):
        if step in joins:
            take(batch.admit([(i, spec(i, lengths[i])) for i in joins[step]]))
        take(batch.step())
        if step > 14 and not len(batch):
            break
    assert finished == set(range(5))
    for i in range(5):
        assert out[i] == alone(small_model, i, lengths[i]), f"sequence {i}"
    assert batch.width == 0 and batch.cache is None  # an empty batch holds nothing


def test_the_cache_stays_within_the_context(small_model):
    """A long-running batch that others keep joining and leaving never grows past the model's
    context: columns no row needs any more are dropped."""
    context = small_model.config.n_positions
    batch = DecodeBatch(small_model, EOS)
    long = SequenceSpec((1,), context - 1, Sampling(ignore_eos=True), 1)
    batch.admit([("long", long)])
    joined = 0
    while len(batch):
        if len(batch) < 3 and any(r.key == "long" for r in batch.rows):
            short = SequenceSpec((2, 3) * 5, 7, Sampling(ignore_eos=True), joined)
            batch.admit([(f"short{joined}", short)])
            joined += 1
        batch.step()
        assert batch.width <= context
    assert joined > 5


def test_a_request_joins_a_running_batch_on_a_live_server(generator):
    gate, entered = threading.Event(), threading.Event()
    gate.set()

    class Gated:  # the model behind a gate: every forward call waits there
        def __getattr__(self, name):
            return getattr(generator.model, name)

        def __call__(self, *args, **kwargs):
            entered.set()
            assert gate.wait(30)
            return generator.model(*args, **kwargs)

    gated = TextGenerator(generator.model, generator.tokenizer, "tiny")
    gated.model = Gated()
    config = ServerConfig(port=0, continuous=True)
    long_body = dict(
        prompt="Why did the chicken", max_tokens=40, seed=1, extra_body={"ignore_eos": True}
    )
    short_body = dict(prompt="Knock knock", max_tokens=5, seed=2, temperature=0.7)
    with CompletionServer(gated, config, "tiny") as server:
        api = openai.OpenAI(base_url=server.url, api_key="-", max_retries=0, timeout=60)
        long_alone = api.completions.create(model="tiny", **long_body).choices[0].text
        short_alone = api.completions.create(model="tiny", **short_body).choices[0].text
        stream = api.completions.create(model="tiny", stream=True, **long_body)
        chunks = iter(stream)
        long_text = next(chunks).choices[0].text  # the long request is decoding
        entered.clear()
        gate.clear()  # hold the model mid-batch, send the short request, then let go
        assert entered.wait(30)
        with ThreadPoolExecutor(1) as pool:
            short = pool.submit(api.completions.create, model="tiny", **short_body)
            for _ in range(200):
                if server.batcher.waiting == 1:
                    break
                threading.Event().wait(0.02)
            gate.set()
            short_text = short.result().choices[0].text
        batch_when_short_ended = server.batcher.batch_size
        long_text += "".join(c.choices[0].text for c in chunks)
    assert short_text == short_alone and long_text == long_alone
    assert server.batcher.largest_batch == 2
    assert batch_when_short_ended == 1  # the long request was still decoding: it joined it
