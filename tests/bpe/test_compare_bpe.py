"""`bpe compare`: the numbers it reports equal the ones measured directly with each library.

Oracles: tiktoken's own encoder (held-out token counts), SentencePiece's piece count, and our
tokenizer retrained independently on the same training split (training is deterministic).
"""
from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

import bpe
from bpe import compare

pytestmark = pytest.mark.network

TEXT = "".join((Path(sysconfig.get_paths()["stdlib"]) / n).read_text(encoding="utf-8")
               for n in ("argparse.py", "textwrap.py"))


def test_compare_numbers(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    result = compare.compare([str(corpus)], 600, pattern="cl100k", threads=1)
    rows = {r["name"]: r for r in result["rows"]}
    assert set(rows) == {"ours", "sentencepiece", "tiktoken cl100k_base", "tiktoken o200k_base"}
    held, _ = compare.split_holdout(iter([TEXT]), tmp_path / "train.txt")
    assert result["corpus"]["heldout_lines"] == len(held)
    held_bytes = sum(len(s.encode()) for s in held)
    from bpe.reference import load_reference
    _, encoding = load_reference("cl100k_base")
    tokens = sum(len(encoding.encode_ordinary(s)) for s in held)
    assert rows["tiktoken cl100k_base"]["heldout_tokens"] == tokens
    assert rows["tiktoken cl100k_base"]["bytes_per_token"] == round(held_bytes / tokens, 4)
    ours = bpe.train([str(tmp_path / "train.txt")], 600, pattern="cl100k")
    assert rows["ours"]["heldout_tokens"] == sum(len(ours.encode_ordinary(s)) for s in held)
    assert rows["sentencepiece"]["vocab_size"] == 600
    assert "".join(result["segmentations"]["ours"]) == result["sample"]
    assert "".join(result["segmentations"]["cl100k_base"]) == result["sample"]
    from rich.console import Console
    Console(file=open(tmp_path / "render.txt", "w"), width=120).print(compare.render(result))
    assert "sentencepiece" in (tmp_path / "render.txt").read_text()
