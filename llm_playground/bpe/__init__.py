"""Byte-level BPE: pre-tokenization patterns, encoding, streaming decoding, training, formats.

    from llm_playground import bpe
    tok = bpe.load("cl100k_base")            # or a saved file, tokenizer.json, *.gguf, *.tiktoken
    ids = tok.encode("hello world")
    tok = bpe.train(["corpus/"], vocab_size=4096)

Imports regex and numpy only (never torch); tiktoken is imported only by `bpe.reference`.
"""
from __future__ import annotations

from llm_playground.bpe import patterns
from llm_playground.bpe.incremental_decoder import IncrementalDecoder
from llm_playground.bpe.tokenizer import Tokenizer

REFERENCE_NAMES = ("cl100k_base", "o200k_base")

__all__ = ["Tokenizer", "IncrementalDecoder", "load", "train", "patterns", "REFERENCE_NAMES"]


def load(spec, pattern: str | None = None) -> Tokenizer:
    """A tokenizer from "cl100k_base" / "o200k_base" (built by bpe.reference from the verified
    rank files) or from a file whose format bpe.formats detects. `pattern` overrides the split
    regex of .tiktoken and .gguf files."""
    from llm_playground.bpe import formats
    return formats.load(spec, pattern=pattern)


def train(files_or_iterable, vocab_size: int, pattern: str = "cl100k", special_tokens=(),
          min_frequency: int = 2, progress=None, num_workers=None, **options) -> Tokenizer:
    """Train a byte-level BPE tokenizer; see `bpe.training.train` for every option."""
    from llm_playground.bpe.training import train as _train
    return _train(files_or_iterable, vocab_size, pattern=pattern, special_tokens=special_tokens,
                  min_frequency=min_frequency, progress=progress, num_workers=num_workers,
                  **options)
