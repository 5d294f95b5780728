"""Text generation: load a model once, then generate many samples or stream one.

gen = TextGenerator.load("gpt2")
for piece in gen.stream("Why did the chicken", GenerationConfig(length=30)):
    print(piece, end="")
samples = gen.generate("", num_samples=5, config=GenerationConfig(seed=1))
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tunesmith.checkpoint import load_checkpoint
from tunesmith.decoding import DecodingSequence, SamplingSettings, check_fits, decode
from tunesmith.devices import resolve_device, resolve_dtype, use_all_cores
from tunesmith.errors import UsageError
from tunesmith.model import GPT2
from tunesmith.options import option
from tunesmith.quantize import check_quantization, quantize_model
from tunesmith.textstream import TextTracker
from tunesmith.tokenizer import GPT2Tokenizer


@dataclass
class GenerationConfig:
    """What to generate. Defaults follow the seed's run_generation.py (top-p 0.9)."""

    length: int = option(70, "new tokens per sample")
    temperature: float = option(1.0, "sampling temperature; 0 means greedy", metavar="T")
    top_k: int = option(0, "sample from the K likeliest tokens; 0 means off", metavar="K")
    top_p: float = option(0.9, "nucleus sampling; 1 means off", metavar="P")
    repetition_penalty: float = option(
        1.0, "CTRL-style penalty on tokens already present; 1 means off", metavar="R"
    )
    stop: tuple[str, ...] = option(
        (), "end a sample where TEXT appears (repeatable)", repeat=True, metavar="TEXT"
    )
    ignore_eos: bool = option(False, "keep going past <|endoftext|> (the seed script's way)")
    seed: int | None = option(
        None, "same seed and settings, same output (sample k uses seed + k)", default_help="random"
    )

    def __post_init__(self) -> None:
        self.stop = tuple(self.stop)
        if any(not s for s in self.stop):
            raise UsageError("a stop string cannot be empty")
        self.sampling()  # validates the numbers

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(
            self.length,
            self.temperature,
            self.top_k,
            self.top_p,
            self.repetition_penalty,
            self.ignore_eos,
        )


@dataclass
class Sample:
    index: int
    prompt: str
    text: str  # the generated continuation, without the prompt
    token_ids: list[int] = field(repr=False)
    finish_reason: str  # "eos", "stop" or "length"


@dataclass
class GenerationRequest:
    """One sample to generate: a prompt's token ids, the GenerationConfig and the sample's seed.
    `TextGenerator.stream_batch` decodes a batch of them (the server builds these)."""

    prompt_ids: list[int]
    config: GenerationConfig
    seed: int


class TextGenerator:
    """A model and its tokenizer, loaded once, ready to generate many times."""

    def __init__(self, model: GPT2, tokenizer: GPT2Tokenizer, source: str = ""):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source

    @classmethod
    def load(
        cls, source: str = "gpt2", device: str = "auto", dtype: str = "auto", quantize: str = "none"
    ) -> TextGenerator:
        """Load from a hub id or a Hugging Face folder (`tunesmith.load` also takes runs/N).
        quantize "int8": weight-only int8 linear layers and LM head (`tunesmith.quantize`),
        activations in `dtype`."""
        check_quantization(quantize)
        dev = resolve_device(device)
        if dev.type == "cpu":
            use_all_cores()
        compute_dtype = resolve_dtype(dtype, dev)
        if quantize == "none":
            model, tokenizer, _ = load_checkpoint(source, dev, compute_dtype)
        else:
            # Scales come from the weights as the file stores them (float32 for GPT-2), read
            # from the mapped file a layer at a time: no float copy of the model is ever made.
            # Then the model moves to its device and dtype.
            model, tokenizer, _ = load_checkpoint(source, "cpu", dtype=None)
            model = quantize_model(model, quantize).to(dev, compute_dtype)
        return cls(model, tokenizer, str(source))

    @property
    def context_length(self) -> int:
        return self.model.config.n_positions

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a prompt; an empty prompt starts unconditionally from <|endoftext|>."""
        # Whitespace only counts as empty: the seed's prompt ' ' meant "unconditional".
        ids = self.tokenizer.encode(prompt) if prompt.strip() else []
        return ids or [self.tokenizer.eos_id]

    def generate(
        self,
        prompts: str | list[str] = "",
        num_samples: int = 1,
        config: GenerationConfig | None = None,
        batch_size: int = 8,
        on_sample: Callable[[Sample], None] | None = None,
    ) -> list[Sample]:
        """num_samples per prompt, decoded batch_size at a time; on_sample sees each as it ends."""
        config = config or GenerationConfig()
        if num_samples < 1:
            raise UsageError(f"num-samples must be at least 1, got {num_samples}")
        if batch_size < 1:
            raise UsageError(f"batch-size must be at least 1, got {batch_size}")
        prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
        base_seed = _base_seed(config)
        requests = []  # (prompt text, request), in output order
        for prompt in prompt_list:
            ids = self.encode_prompt(prompt)
            check_fits(len(ids), config.length, self.context_length)
            for _ in range(num_samples):
                requests.append((prompt, GenerationRequest(ids, config, base_seed + len(requests))))
        samples: list[Sample] = []
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            finished: dict[int, Sample] = {}
            for i, _delta, done in self.stream_batch([r for _, r in chunk]):
                if done is not None:
                    finished[i] = Sample(
                        start + i, chunk[i][0], done.text, done.token_ids, done.finish_reason
                    )
                    if on_sample is not None:
                        on_sample(finished[i])
            samples.extend(finished[i] for i in range(len(chunk)))
        return samples

    def stream(self, prompt: str = "", config: GenerationConfig | None = None) -> Iterator[str]:
        """The text of one sample, piece by piece as tokens are produced."""
        for _, delta, _ in self.stream_batch([self.request(prompt, config)]):
            if delta:
                yield delta

    def request(
        self, prompt: str = "", config: GenerationConfig | None = None
    ) -> GenerationRequest:
        """One sequence to decode; seeded with config.seed (random when None)."""
        config = config or GenerationConfig()
        return GenerationRequest(self.encode_prompt(prompt), config, _base_seed(config))

    def stream_batch(
        self, requests: list[GenerationRequest]
    ) -> Iterator[tuple[int, str, Sample | None]]:
        """Decode requests together. Yields (index, new text, None) as text arrives and
        (index, last text, Sample) when request `index` finishes."""
        states = [
            TextTracker(self.tokenizer, r.config.stop, skip_eos=not r.config.ignore_eos)
            for r in requests
        ]
        sequences = [
            DecodingSequence.start(r.prompt_ids, r.config.sampling(), r.seed) for r in requests
        ]
        index_of = {id(s): i for i, s in enumerate(sequences)}

        def is_stopped(seq: DecodingSequence) -> bool:  # asked of every token but eos
            return states[index_of[id(seq)]].add(seq.new_ids[-1])

        for step in decode(self.model, sequences, self.tokenizer.eos_id, is_stopped):
            for i, _token in step:
                seq, state = sequences[i], states[i]
                if seq.finish_reason is None:
                    delta = state.take_new_text(final=False)
                    if delta:
                        yield i, delta, None
                else:
                    ids = list(seq.new_ids)
                    if seq.finish_reason == "eos":
                        ids = ids[:-1]
                    sample = Sample(i, "", state.text, ids, seq.finish_reason)
                    yield i, state.take_new_text(final=True), sample


def _base_seed(config: GenerationConfig) -> int:
    return config.seed if config.seed is not None else secrets.randbits(48)
