"""Hugging Face tokenizer.json: our export loads in `tokenizers` and gives our ids; we import
byte-level files that `tokenizers` itself wrote and give its ids.

Oracle: the `tokenizers` library (Tokenizer.from_file, and its own BPE trainer for the import
direction). Special-token text is left out of the id comparisons: Hugging Face matches added
tokens inside any text, while we follow tiktoken's rule (checked separately).
"""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from llm_playground import bpe
from llm_playground.bpe import formats

import tokenizers

HOSTILE = ["Hello, world!", "today\n ", "today\n  \n", "中文字符 漢字 ひらがな", "한국어 텍스트 ㄱㄴ",
           "😀👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈", "e\u0301\u0301 a\u0308", "\x85 a\x85b \x1c\x1d\x1e\x1f",
           "   \t\t\n\n  x  ", "\r\n\r\n  y", " " * 300, "\n" * 100, "a" * 700,
           "x = f(1234567) # ∑ ²³", "I'M YOU'RE they'll 's", "مرحبا שלום नमस्ते", "\x00\x01\x7f"]


def _hf_ids(hf, text):
    return hf.encode(text, add_special_tokens=False).ids


def _ours(tok, text):
    return tok.encode_ordinary(text)


def _stdlib_text(limit: int = 300_000) -> str:
    """Real text nobody here wrote: Python standard library sources."""
    import sysconfig
    from pathlib import Path
    root = Path(sysconfig.get_paths()["stdlib"])
    names = ("argparse.py", "textwrap.py", "difflib.py", "shutil.py", "tarfile.py")
    return "".join((root / n).read_text(encoding="utf-8") for n in names)[:limit]


@pytest.fixture(scope="module")
def small():
    return bpe.train([_stdlib_text()], 800, pattern="cl100k",
                     special_tokens=["<|endoftext|>"], name="small")


@pytest.fixture(scope="module")
def exported(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    assert formats.save(small, path) == "hf"
    return tokenizers.Tokenizer.from_file(str(path)), path


def test_export_gives_our_ids(small, exported):
    hf, _ = exported
    for text in HOSTILE + [_stdlib_text()[:50_000]]:
        assert _hf_ids(hf, text) == _ours(small, text), text[:40]


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_export_gives_our_ids_on_generated_text(small, exported, text):
    hf, _ = exported
    if "<|endoftext|>" in text:
        return
    assert _hf_ids(hf, text) == _ours(small, text)


def test_export_specials_and_decoding(small, exported):
    hf, _ = exported
    eot = small.special_tokens["<|endoftext|>"]
    assert _hf_ids(hf, "<|endoftext|>") == small.encode("<|endoftext|>", allowed_special="all")
    ids = _ours(small, HOSTILE[3])
    assert hf.decode(ids) == small.decode(ids)
    assert hf.token_to_id("<|endoftext|>") == eot


def test_import_round_trip(small, exported):
    _, path = exported
    back = bpe.load(str(path))
    assert back.vocab == small.vocab and back.merges == small.merges
    assert back.special_tokens == small.special_tokens and back.pattern == small.pattern


def test_import_file_written_by_tokenizers(tmp_path):
    """A GPT-2-style byte-level BPE trained and saved by `tokenizers` itself."""
    from tokenizers import decoders, models, pre_tokenizers, trainers
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    hf.train_from_iterator([_stdlib_text()], trainer)
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    assert json.loads(path.read_text())["pre_tokenizer"]["type"] == "ByteLevel"
    ours = bpe.load(str(path))
    assert ours.special_tokens == {"<|endoftext|>": hf.token_to_id("<|endoftext|>")}
    for text in HOSTILE:
        assert _ours(ours, text) == _hf_ids(hf, text), text[:40]


def test_import_digits_then_bytelevel(small, exported, tmp_path):
    """SmolLM2 / StarCoder pre-tokenizer: Digits(individual) + ByteLevel(use_regex=True)."""
    hf, path = exported
    doc = json.loads(path.read_text())
    doc["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    digits = tmp_path / "digits-tokenizer.json"
    digits.write_text(json.dumps(doc))
    oracle = tokenizers.Tokenizer.from_file(str(digits))
    ours = bpe.load(str(digits))
    for text in HOSTILE + ["x  1", "ab   12345  6.75 3,000", "²³ ٣٤ Ⅷ", " 1 2  3   4\n5"]:
        assert _ours(ours, text) == _hf_ids(oracle, text), text[:40]


@pytest.mark.network
@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_reference_export_gives_tiktoken_ids(tmp_path, name):
    from llm_playground.bpe.reference import load_reference
    ours, encoding = load_reference(name)
    path = tmp_path / f"{name}.tokenizer.json"
    formats.save(ours, path, "hf")
    hf = tokenizers.Tokenizer.from_file(str(path))
    for text in HOSTILE + ["1234567 12 1 99999", _stdlib_text(30_000)]:
        assert _hf_ids(hf, text) == encoding.encode_ordinary(text), text[:40]


@pytest.mark.parametrize("regex", [r"\d{1,3}", r"[A-Z][a-z]+", r"\s+"])
def test_import_split_regex_keeps_text_between_matches(exported, tmp_path, regex):
    """Split(Regex, Isolated) keeps the text between matches as pieces of its own; a pattern
    that does not cover all text must not lose the rest (it once did: findall dropped it)."""
    hf, path = exported
    doc = json.loads(path.read_text())
    doc["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
         "use_regex": False}]}
    split = tmp_path / "split-tokenizer.json"
    split.write_text(json.dumps(doc))
    oracle = tokenizers.Tokenizer.from_file(str(split))
    ours = bpe.load(str(split))
    for text in HOSTILE + ["ab12345cd 6 Hello World", _stdlib_text(20_000)]:
        assert _ours(ours, text) == _hf_ids(oracle, text), text[:40]
        assert ours.decode(ours.encode_ordinary(text)) == text
