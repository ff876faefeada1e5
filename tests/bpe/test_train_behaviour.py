"""Trainer behaviour: determinism, inputs (files, folders, globs, documents, several processes),
the 1 MB single-character corpus, progress, and clear errors on bad input.
(Merge correctness against Hugging Face is in test_train_hf_oracle.py.)"""
from __future__ import annotations

import sysconfig
import time
from pathlib import Path

import pytest

from llm_playground import bpe
from llm_playground.bpe.counting import CorpusError


def _corpus(tmp_path: Path) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = []
    for k, src in enumerate(sorted(root.glob("email/*.py"))[:8]):
        p = tmp_path / "corpus" / f"part{k}.txt"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(src.read_bytes())
        paths.append(p)
    return paths


def test_deterministic_and_same_for_every_input_form(tmp_path):
    paths = _corpus(tmp_path)
    a = bpe.train([str(p) for p in paths], 1000)
    b = bpe.train([str(p) for p in paths], 1000)
    assert a.merges == b.merges and a.vocab == b.vocab
    folder = bpe.train([tmp_path / "corpus"], 1000)
    globbed = bpe.train([str(tmp_path / "corpus" / "*.txt")], 1000)
    docs = bpe.train(iter([p.read_text() for p in paths]), 1000)
    assert folder.merges == globbed.merges == docs.merges == a.merges


def test_several_processes_and_small_blocks_give_the_same_merges(tmp_path, monkeypatch):
    paths = _corpus(tmp_path)
    one = bpe.train(paths, 800, num_workers=1)
    import llm_playground.bpe.counting as counting
    monkeypatch.setattr(counting, "BLOCK_BYTES", 1 << 14)  # many blocks, each cut at a newline
    two = bpe.train(paths, 800, num_workers=2)
    # block edges may split a whitespace run: counts may differ there, nowhere else
    same = sum(x == y for x, y in zip(one.merges, two.merges))
    assert same >= 0.9 * len(one.merges)
    whole = bpe.train(paths, 800, num_workers=2)
    assert whole.merges == two.merges


def test_one_megabyte_of_one_character_is_fast():
    for text in ["a" * 1_000_000, " \n" * 500_000]:
        start = time.perf_counter()
        tok = bpe.train(iter([text]), 300, min_frequency=1)
        assert time.perf_counter() - start < 30
        sample = text[:100_003]
        assert tok.decode(tok.encode(sample)) == sample
        assert len(tok.encode(sample)) <= 40


def test_progress_reports_done_and_total():
    calls = []
    bpe.train(iter(["hello world " * 50, "abc def " * 30]), 300,
              progress=lambda done, total: calls.append((done, total)))
    assert calls and all(total == 44 for _, total in calls)
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and dones[-1] <= 44


def test_special_text_in_corpus_is_not_learned():
    tok = bpe.train(iter(["<|eot|>hello" * 200]), 400, special_tokens=["<|eot|>"],
                    min_frequency=1)
    learned = [a + b for a, b in tok.merges]
    assert b"hello" in learned
    assert not any(b"eot" in t or b"<|" in t or b"|>" in t for t in learned)
    assert tok.special_tokens == {"<|eot|>": 256 + len(learned)}


def test_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="below 256 byte tokens"):
        bpe.train(iter(["abc"]), 257, special_tokens=["<a>", "<b>"])
    with pytest.raises(CorpusError, match="empty"):
        bpe.train(iter([]), 300)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(CorpusError, match="empty"):
        bpe.train([empty], 300)
    with pytest.raises(CorpusError, match="no such file"):
        bpe.train([tmp_path / "missing.txt"], 300)
    with pytest.raises(CorpusError, match="no file matches"):
        bpe.train([str(tmp_path / "*.nothing")], 300)
    with pytest.raises(ValueError, match="not a valid regex|neither a known name"):
        bpe.train(iter(["abc"]), 300, pattern="(unclosed")


def test_invalid_utf8_raises_or_is_replaced_with_a_warning(tmp_path):
    bad = tmp_path / "bad.txt"
    data = b"good text here\n" * 20 + b"\xff\xfe broken \xc3\n" + b"more text\n" * 20
    bad.write_bytes(data)
    with pytest.raises(CorpusError, match=r"bad.txt: invalid UTF-8 at byte 300"):
        bpe.train([bad], 300)
    warnings = []
    tok = bpe.train([bad], 300, invalid_utf8="replace", warn=warnings.append)
    assert len(warnings) == 1 and f"replaced {data.decode('utf-8', 'replace').count(chr(0xFFFD))} invalid" in warnings[0]
    assert tok.encode("more text") and tok.decode(tok.encode("more text")) == "more text"


def test_a_pattern_must_match_all_of_the_corpus():
    """Encoding keeps only the text the pattern matches, so a pattern that leaves some corpus text
    unmatched (or all of it: 'nope' as a regex) is refused with how much, and an example; the
    text of special tokens does not need matching."""
    docs = ["alpha beta, gamma!\n", "delta 42\n"]
    with pytest.raises(ValueError, match=r"pattern 'nope' matched nothing in the corpus "
                                         r"\(0 chunks in 28 characters\).*known pattern: gpt2"):
        bpe.train(iter(docs), 300, pattern="nope")
    with pytest.raises(ValueError, match=r"leaves 32.1% of the corpus unmatched \(the first such "
                                         r"text: ' '\)"):
        bpe.train(iter(docs), 300, pattern=r"\p{L}+")
    with pytest.raises(CorpusError, match="empty"):       # no text at all: still 'empty'
        bpe.train(iter([""]), 300, pattern="nope")
    tok = bpe.train(iter(["one<|x|>two three<|x|>"]), 300, pattern=r"\w+|\s+",
                    special_tokens=["<|x|>"])
    assert tok.decode(tok.encode("one<|x|>two", allowed_special="all")) == "one<|x|>two"


def test_regex_prefix_and_user_option_rule():
    from llm_playground.bpe import patterns
    assert patterns.resolve("gpt2") == patterns.GPT2
    assert patterns.resolve("regex:gpt2") == "gpt2"            # the literal regex, not the name
    assert patterns.check_option("O200K") == "O200K"
    assert patterns.check_option(r"\w+|\W+") == r"\w+|\W+"
    assert patterns.check_option("regex:abc") == "regex:abc"
    for word in ("nope", "cl100k-base", "x", "o200k.base"):
        with pytest.raises(ValueError, match=f"unknown pattern '{word}'"):
            patterns.check_option(word)
