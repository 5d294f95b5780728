"""tunesmith: fine-tune GPT-2-family language models on your own text and generate from them."""

__version__ = "0.1.0"
