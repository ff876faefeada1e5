"""`bpe compare`: the numbers it reports equal the ones measured directly with each library.

Oracles: tiktoken's own encoder (held-out token counts), SentencePiece's piece count, and our
tokenizer retrained independently on the same training split (training is deterministic).
"""
from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from llm_playground import bpe
from llm_playground.bpe import compare

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
    from llm_playground.bpe.reference import load_reference
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


def test_whole_char_pieces_join_a_character_split_over_tokens():
    pieces = {1: "🙂".encode()[:2], 2: "🙂".encode()[2:], 3: b" a", 4: b"\xff"}
    assert compare.whole_char_pieces([3, 1, 2, 4, 3, 1], pieces.get) == [" a", "🙂", "\ufffd", " a",
                                                                         "\ufffd"]


def test_sample_line_shows_whole_characters_and_counts_tokens(tmp_path):
    # Found with `bpe compare` on emoji/CJK/accented text: ours printed "fox ��� 你好 ... n��mero",
    # one U+FFFD per byte token of a split character, and counted display pieces as tokens.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"Line {i}: the fox 🙂 你好 jumps, número {i} {chr(0x9F00 + i)}\n"
                              for i in range(60)), encoding="utf-8")   # a rare CJK char per line
    result = compare.compare([str(corpus)], 300, pattern="cl100k", threads=1)
    from llm_playground.bpe.reference import load_reference
    _, encoding = load_reference("cl100k_base")
    for name in ("ours", "cl100k_base"):
        assert "".join(result["segmentations"][name]) == result["sample"], name
    assert result["sample_tokens"]["cl100k_base"] == len(encoding.encode_ordinary(result["sample"]))
    for name in ("ours", "cl100k_base"):   # the line's rare character is split over byte tokens
        assert result["sample_tokens"][name] > len(result["segmentations"][name]), name
