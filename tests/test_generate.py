"""Generation against `transformers`' generate, and the behaviour users rely on."""

import pytest
import torch
from transformers import GPT2LMHeadModel

from tunesmith.errors import ContextLengthError, UsageError
from tunesmith.generate import GenerationConfig, TextGenerator


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    return TextGenerator.load(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return GPT2LMHeadModel.from_pretrained(tiny_model_dir).eval()


def reference_greedy(reference, ids, n, **kwargs):
    x = torch.tensor([ids])
    out = reference.generate(
        x,
        attention_mask=torch.ones_like(x),
        max_new_tokens=n,
        do_sample=False,
        pad_token_id=50256,
        **kwargs,
    )
    return out[0, len(ids) :].tolist()


PROMPTS = [
    "",
    " ",
    "Why did the chicken cross the road?",
    "I told my wife",
    "日本語 and émojis 😀",
    "a<|endoftext|>b",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_matches_transformers(generator, reference, prompt):
    ids = generator.encode_prompt(prompt)
    expected = reference_greedy(reference, ids, 25, eos_token_id=None)
    config = GenerationConfig(length=25, temperature=0, ignore_eos=True)
    assert generator.generate(prompt, config=config)[0].token_ids == expected


def test_greedy_with_repetition_penalty_matches_transformers(generator, reference):
    ids = generator.encode_prompt("Knock knock. Who's there?")
    expected = reference_greedy(reference, ids, 20, eos_token_id=None, repetition_penalty=1.3)
    config = GenerationConfig(length=20, temperature=0, ignore_eos=True, repetition_penalty=1.3)
    assert generator.generate("Knock knock. Who's there?", config=config)[0].token_ids == expected


def test_unconditional_prompt_starts_from_endoftext(generator):
    assert generator.encode_prompt("") == [50256]
    assert generator.encode_prompt(" ") == [50256]  # the seed's --prompt=' '


def test_same_seed_same_output_and_batching_does_not_change_samples(generator):
    config = GenerationConfig(length=15, seed=7, top_k=50)
    prompts = ["a", "hello world how are", ""]
    batched = generator.generate(prompts, num_samples=2, config=config, batch_size=6)
    one_by_one = generator.generate(prompts, num_samples=2, config=config, batch_size=1)
    again = generator.generate(prompts, num_samples=2, config=config, batch_size=4)
    assert [s.token_ids for s in batched] == [s.token_ids for s in one_by_one]
    assert [s.token_ids for s in batched] == [s.token_ids for s in again]
    assert len({tuple(s.token_ids) for s in batched}) == 6  # samples differ from each other


def test_different_seeds_differ(generator):
    a = generator.generate("x", config=GenerationConfig(length=10, seed=1))[0]
    b = generator.generate("x", config=GenerationConfig(length=10, seed=2))[0]
    assert a.token_ids != b.token_ids


def test_stop_string_ends_a_sample_early(generator):
    free = generator.generate("", config=GenerationConfig(length=40, seed=3, ignore_eos=True))[0]
    stop = free.text[10:13]
    stopped = generator.generate(
        "", config=GenerationConfig(length=40, seed=3, stop=(stop,), ignore_eos=True)
    )[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.find(stop)]
    assert len(stopped.token_ids) < len(free.token_ids)


def test_sample_ends_at_endoftext_unless_ignore_eos(generator):
    # A head that makes <|endoftext|> the likeliest next token, so greedy emits it at once.
    model = generator.model
    head = torch.nn.Linear(model.config.n_embd, model.config.vocab_size)
    with torch.no_grad():
        head.weight = model.transformer.wte.weight
        head.bias.zero_()
        head.bias[50256] = 1e4
    tied_head, model.lm_head = model.lm_head, head
    try:
        ended = generator.generate("Hi", config=GenerationConfig(length=10, temperature=0))
        ran_on = generator.generate(
            "Hi", config=GenerationConfig(length=10, temperature=0, ignore_eos=True)
        )
    finally:
        model.lm_head = tied_head
    assert ended[0].finish_reason == "eos" and ended[0].text == ""
    assert ran_on[0].finish_reason == "length" and len(ran_on[0].token_ids) == 10
    assert ran_on[0].text == "<|endoftext|>" * 10


def test_stream_gives_the_same_text_piece_by_piece(generator):
    config = GenerationConfig(length=30, seed=5, stop=("the",))
    pieces = list(generator.stream("Once upon a time", config))
    sample = generator.generate("Once upon a time", config=config)[0]
    assert "".join(pieces) == sample.text
    assert len(pieces) > 1 or sample.finish_reason == "stop"


def test_prompt_beyond_context_is_a_clear_error(generator):
    with pytest.raises(ContextLengthError, match="context of 128"):
        generator.generate("word " * 100, config=GenerationConfig(length=70))


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-1),
        dict(top_p=0),
        dict(top_p=1.5),
        dict(top_k=-3),
        dict(length=0),
        dict(stop=("",)),
    ],
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(UsageError):
        GenerationConfig(**bad)
