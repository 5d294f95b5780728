"""Continuous batching: sequences that join a running batch at a later step, with prompts of
other lengths and other sampling settings, produce exactly the tokens they produce alone (as
`TextGenerator.generate` decodes them, through tunesmith.decoding); on a live server, a request
that arrives while another decodes joins it at the next step and gets the text it gets alone."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch

from tunesmith.decoding import DecodingSequence, SamplingSettings, decode
from tunesmith.generate import TextGenerator
from tunesmith.model import GPT2, GPT2Config
from tunesmith.server import CompletionServer, ServerConfig
from tunesmith.server.batcher import Batcher
from tunesmith.server.engine import DecodeBatch, Sampling, SequenceSpec
from tunesmith.server.pass_cost import PassCost

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


def test_joining_and_leaving_within_capacity_moves_rows_not_the_cache(small_model):
    """Sequences leave from the middle of the batch and newcomers take their slots: the cache
    keeps its storage (nothing is copied whole) and every sequence gets what it gets alone."""
    lengths = [20, 3, 16, 4, 9]
    batch = DecodeBatch(small_model, EOS)
    out: dict[int, list[int]] = {i: [] for i in range(5)}

    def take(produced) -> None:
        for p in produced:
            out[p.key].append(p.token)

    take(batch.admit([(i, spec(i, lengths[i])) for i in range(4)]))  # four slots
    storage = batch.cache.keys[0].data_ptr()
    for _ in range(4):
        take(batch.step())  # sequences 1 and 3, in the batch's middle, leave
    assert [r.key for r in batch.rows] == [0, 2]
    take(batch.admit([(4, spec(4, lengths[4]))]))
    assert len(batch) == 3 and batch.cache.keys[0].data_ptr() == storage
    while len(batch):
        take(batch.step())
    for i in range(5):
        assert out[i] == alone(small_model, i, lengths[i]), f"sequence {i}"


def test_a_long_running_batch_with_many_joins_and_leaves():
    """For hundreds of steps, sequences join (prompts longer and shorter than the batch's
    width), finish or are abandoned at random: rows move, slots and columns grow, columns
    that no row uses any more are reclaimed, and every token is the one the sequence gets
    alone."""
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=64, n_positions=300, n_embd=32, n_layer=2, n_head=2)
    model = GPT2(config).eval()
    rng = random.Random(0)
    specs = {}
    for key in range(30):
        prompt = tuple(rng.randrange(EOS) for _ in range(1 if key == 0 else rng.randint(1, 30)))
        specs[key] = SequenceSpec(prompt, rng.randint(10, 60), _sampling(key % 5), key)
    batch = DecodeBatch(model, EOS)
    out: dict[int, list[int]] = {key: [] for key in specs}
    abandoned, waiting, widths = set(), list(specs), []

    def take(produced) -> None:
        for p in produced:
            out[p.key].append(p.token)

    while waiting or len(batch):
        if waiting and (not len(batch) or len(widths) < 3 or rng.random() < 0.06):
            joining = [waiting.pop(0) for _ in range(min(len(waiting), rng.randint(1, 2)))]
            take(batch.admit([(key, specs[key]) for key in joining]))
        if rng.random() < 0.03 and len(batch) > 1:
            victim = rng.choice([r.key for r in batch.rows])
            batch.drop([victim])
            abandoned.add(victim)
        take(batch.step())
        widths.append(batch.width)
    assert abandoned and len(widths) > config.n_positions
    assert max(widths) < config.n_positions - 50  # unused columns were reclaimed on the way
    for key, s in specs.items():
        settings = SamplingSettings(s.max_new_tokens, ignore_eos=True, **SETTINGS[key % 5])
        seq = DecodingSequence.start(list(s.prompt_ids), settings, s.seed)
        for _ in decode(model, [seq], EOS):
            pass
        n = len(out[key]) if key in abandoned else len(seq.new_ids)
        assert out[key] == seq.new_ids[:n], f"sequence {key}"


def _sampling(setting: int) -> Sampling:
    return Sampling(ignore_eos=True, **SETTINGS[setting])


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
        running_as_they_left = []  # how many sequences were decoding as each one finished
        leave = server.batcher._leave

        def recording_leave(key):
            running_as_they_left.append(server.batcher.batch_size)
            leave(key)

        server.batcher._leave = recording_leave
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
        long_text += "".join(c.choices[0].text for c in chunks)
    assert short_text == short_alone and long_text == long_alone
    assert server.batcher.largest_batch == 2
    # The short request left while the long one was still decoding beside it: it joined it.
    # (Read from the worker as each left: the client reads its answer later, by when the long
    # request may have finished too.)
    assert running_as_they_left == [2, 1]


@pytest.mark.parametrize("in_time", [True, False])
def test_requests_joining_a_running_batch_are_prefilled_in_its_next_steps_pass(
    generator, monkeypatch, in_time
):
    """Two requests that arrive while another decodes join the batch's next step: their
    prompts go through the model in that step's own forward pass (no prefill of their own),
    unless that would make their first tokens late (then they are prefilled first, together);
    either way each gets the text it gets alone."""
    monkeypatch.setattr(Batcher, "_in_time", lambda self, newcomers: in_time)
    calls: list[tuple] = []  # ("call", rows, input_pos) or ("groups", (rows, tokens), ...)
    hold, entered, release = threading.Event(), threading.Event(), threading.Event()
    release.set()

    class Recorded:  # the model, recording its calls; a decode step waits while `hold` is set
        def __getattr__(self, name):
            return getattr(generator.model, name)

        def __call__(self, idx, input_pos=0, *args, **kwargs):
            if input_pos > 0 and hold.is_set():
                hold.clear()
                entered.set()
                assert release.wait(30)
            calls.append(("call", idx.shape[0], input_pos))
            return generator.model(idx, input_pos, *args, **kwargs)

        def forward_groups(self, segments):
            calls.append(("groups", *(tuple(s.idx.shape) for s in segments)))
            return generator.model.forward_groups(segments)

    recorded = TextGenerator(generator.model, generator.tokenizer, "tiny")
    recorded.model = Recorded()
    bodies = [
        dict(prompt="Why did the chicken", max_tokens=40, seed=1, extra_body={"ignore_eos": True}),
        dict(prompt="Knock knock", max_tokens=6, seed=2, extra_body={"ignore_eos": True}),
        dict(prompt="A man walks into", max_tokens=6, seed=3, extra_body={"ignore_eos": True}),
    ]
    lengths = [len(generator.tokenizer.encode(b["prompt"])) for b in bodies]
    with CompletionServer(recorded, ServerConfig(port=0), "tiny") as server:
        api = openai.OpenAI(base_url=server.url, api_key="-", max_retries=0, timeout=60)
        texts_alone = [api.completions.create(model="tiny", **b).choices[0].text for b in bodies]
        release.clear()
        hold.set()  # the first request's next decode step waits
        stream = iter(api.completions.create(model="tiny", stream=True, **bodies[0]))
        texts = [next(stream).choices[0].text, "", ""]  # the first request is decoding
        assert entered.wait(30)
        start = len(calls)
        with ThreadPoolExecutor(2) as pool:
            later = [pool.submit(api.completions.create, model="tiny", **b) for b in bodies[1:]]
            for _ in range(200):
                if server.batcher.waiting == 2:
                    break
                threading.Event().wait(0.02)
            release.set()
            texts[1], texts[2] = (f.result().choices[0].text for f in later)
        texts[0] += "".join(c.choices[0].text for c in stream)
    assert calls[start] == ("call", 1, calls[start][2])  # the first request's held step
    if in_time:  # then one pass: its next token beside both prompts
        assert calls[start + 1] == ("groups", (1, 1), (2, max(lengths[1:])))
        assert not [c for c in calls[start:] if c[0] == "call" and c[2] == 0]  # no own prefill
    else:  # then both prompts' prefill, then a step of all three
        assert calls[start + 1 : start + 3] == [("call", 2, 0), ("call", 3, calls[start + 2][2])]
    assert texts == texts_alone


def test_the_pass_cost_fit_recovers_how_a_pass_grows():
    """seconds = fixed + per token + per output, learnt from passes of a few shapes."""
    cost = PassCost()
    assert cost.fit() is None  # nothing measured yet
    truth = (0.02, 0.0015, 0.0008)
    for tokens, outputs in [(1, 1), (12, 1), (16, 16), (26, 2), (8, 8), (30, 3)] * 3:
        cost.record(tokens, outputs, truth[0] + truth[1] * tokens + truth[2] * outputs)
    assert cost.fit() == pytest.approx(truth)
    assert cost.fit().seconds(20, 4) == pytest.approx(0.02 + 0.03 + 0.0032)


def test_joiners_of_a_batch_that_emptied_are_prefilled_and_reported_first(small_model):
    """Everything running left (say, abandoned) after newcomers were chosen to join: the step
    prefills them on their own, hands their first tokens to `joined`, and decodes nothing."""
    batch = DecodeBatch(small_model, EOS)
    batch.admit([(0, spec(0, 20))])
    batch.drop([0])
    reported = []
    assert batch.step([(1, spec(1, 8)), (2, spec(2, 5))], reported.extend) == []
    assert [p.key for p in reported] == [1, 2] and len(batch) == 2
    for _ in range(7):
        reported += batch.step()
    tokens = {k: [p.token for p in reported if p.key == k] for k in (1, 2)}
    assert tokens == {1: alone(small_model, 1, 8), 2: alone(small_model, 2, 5)}
