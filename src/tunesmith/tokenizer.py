"""GPT-2 byte-level BPE through `tokenizers`, built to give exactly the ids `transformers` gives.

GPT-2's own vocabulary and merges ship inside tunesmith (assets/gpt2, OpenAI's licence beside
them), so everything that needs only GPT-2's tokenizer works without the network.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from tunesmith.errors import CheckpointError

EOS_TOKEN = "<|endoftext|>"
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
SHIPPED_GPT2_DIR = Path(__file__).parent / "assets" / "gpt2"
# Hub models whose tokenizer is GPT-2's, unchanged, with GPT-2's context of 1,024 tokens: for
# these the shipped files stand in for a download.
GPT2_TOKENIZER_MODELS = frozenset(
    {
        "gpt2",
        "gpt2-medium",
        "gpt2-large",
        "gpt2-xl",
        "distilgpt2",
        "openai-community/gpt2",
        "openai-community/gpt2-medium",
        "openai-community/gpt2-large",
        "openai-community/gpt2-xl",
        "distilbert/distilgpt2",
    }
)
GPT2_CONTEXT = 1024


class GPT2Tokenizer:
    """Thin wrapper: encode/decode plus the end-of-text id, loaded from a Hugging Face folder."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        eos = tokenizer.token_to_id(EOS_TOKEN)
        if eos is None:
            raise CheckpointError(f"tokenizer has no {EOS_TOKEN} token; is this a GPT-2 tokenizer?")
        self.eos_id: int = eos

    @classmethod
    def from_folder(cls, folder: str | Path) -> GPT2Tokenizer:
        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            return cls(Tokenizer.from_file(str(folder / "tokenizer.json")))
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return cls.from_vocab_and_merges(folder / "vocab.json", folder / "merges.txt")
        raise CheckpointError(
            f"no tokenizer in {folder}: expected tokenizer.json or vocab.json + merges.txt"
        )

    @classmethod
    def from_vocab_and_merges(
        cls, vocab_path: str | Path, merges_path: str | Path
    ) -> GPT2Tokenizer:
        bpe = models.BPE.from_file(str(vocab_path), str(merges_path))
        tok = Tokenizer(bpe)
        # GPT-2 splits on its regex without adding a prefix space; `transformers` does the same.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        # <|endoftext|> in text is the special token, as in `transformers`' GPT2Tokenizer.
        tok.add_special_tokens([EOS_TOKEN])
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def save(self, folder: str | Path) -> None:
        """Write tokenizer.json plus the config files `transformers`' AutoTokenizer expects."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(folder / "tokenizer.json"))
        config = {
            "tokenizer_class": "GPT2Tokenizer",
            "model_max_length": 1024,
            "bos_token": EOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "unk_token": EOS_TOKEN,
            "add_prefix_space": False,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        special = {"bos_token": EOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN}
        (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def gpt2_tokenizer() -> GPT2Tokenizer:
    """GPT-2's tokenizer from the files shipped inside tunesmith: no download, no network."""
    return GPT2Tokenizer.from_vocab_and_merges(
        SHIPPED_GPT2_DIR / "vocab.json", SHIPPED_GPT2_DIR / "merges.txt"
    )


def shipped_tokenizer_for(model: str) -> GPT2Tokenizer | None:
    """The shipped GPT-2 tokenizer when `model` names a hub model that uses it unchanged
    (gpt2, gpt2-medium, distilgpt2, ...), else None. A local folder of that name wins."""
    if model in GPT2_TOKENIZER_MODELS and not Path(model).exists():
        return gpt2_tokenizer()
    return None
