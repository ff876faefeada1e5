"""Our own file and the .tiktoken rank file: save -> load gives the same tokenizer and ids.

Oracles: the tokenizer before saving (same vocab, merges, specials, pattern and ids on hostile
text); for cl100k_base, tiktoken's own expected SHA-256 of the rank file (our save must
reproduce it byte for byte) and tiktoken's special tokens.
"""
from __future__ import annotations

import hashlib
import os
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from llm_playground import bpe
from llm_playground.bpe import formats
from llm_playground.bpe.formats.common import FormatError
from llm_playground.bpe.formats.native import escape_token, unescape_token

HOSTILE = ["Hello, world!", "today\n ", "中文字符 漢字 ひらがな", "한국어 텍스트", "😀👨\u200d👩\u200d👧",
           "e\u0301 a\u0308", "\x85 \x1c\x1d", "   \t\t\n\n  x  ", "\r\n\r\n", "a" * 700,
           "x = f(1234567) # ∑", "'s 'LL they're"]


def stdlib_text(limit: int = 300_000) -> str:
    """Real English-ish text nobody here wrote: Python standard library sources."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for name in ("argparse.py", "textwrap.py", "difflib.py", "shutil.py", "tarfile.py"):
        text = (root / name).read_text(encoding="utf-8")
        parts.append(text)
        size += len(text)
        if size >= limit:
            break
    return "".join(parts)[:limit]


@pytest.fixture(scope="module")
def trained():
    return bpe.train([stdlib_text()], 700, pattern="cl100k",
                     special_tokens=["<|endoftext|>", "<|pad|>"], name="small")


@given(st.binary(max_size=40))
@settings(max_examples=300, deadline=None)
def test_escape_round_trip(data):
    assert unescape_token(escape_token(data)) == data


def test_escape_is_readable():
    assert escape_token(b" the") == " the"
    assert escape_token("中".encode()) == "中"
    assert escape_token("中".encode()[:2]) == "\\xe4\\xb8"
    assert escape_token(b"a\\b\n") == "a\\\\b\\x0a"


def _same(a, b, texts=HOSTILE):
    assert a.vocab == b.vocab
    assert a.merges == b.merges
    assert a.special_tokens == b.special_tokens
    assert a.pattern == b.pattern
    for text in texts:
        assert a.encode(text) == b.encode(text), text


def test_native_round_trip(trained, tmp_path):
    path = tmp_path / "small.bpe.json"
    assert formats.save(trained, path) == "native"
    assert formats.detect_format(path) == "native"
    back = bpe.load(str(path))
    _same(trained, back)
    assert back.name == "small"
    assert back.encode("<|pad|>", allowed_special="all") == [trained.special_tokens["<|pad|>"]]


def test_native_rejects_other_versions(trained, tmp_path):
    path = tmp_path / "v2.bpe.json"
    formats.save(trained, path)
    path.write_text(path.read_text().replace('"version": 1', '"version": 2', 1))
    with pytest.raises(FormatError, match="version 2"):
        bpe.load(str(path))


def test_tiktoken_round_trip_of_trained(trained, tmp_path):
    path = tmp_path / "small.tiktoken"
    assert formats.save(trained, path) == "tiktoken"
    back = formats.load(path, pattern=trained.pattern)
    assert back.merges is None and back.vocab == trained.vocab
    for text in HOSTILE + [stdlib_text(20_000)]:  # rank rule == merge rule for our own training
        assert back.encode_ordinary(text) == trained.encode_ordinary(text)


@pytest.mark.network
def test_cl100k_round_trips_exactly(tmp_path):
    from llm_playground.bpe.reference import SPECS, load_reference
    ours, encoding = load_reference("cl100k_base")
    path = tmp_path / "cl100k_base.tiktoken"
    formats.save(ours, path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SPECS["cl100k_base"].sha256
    back = bpe.load(str(path))
    assert back.special_tokens == encoding._special_tokens
    for text in HOSTILE:
        assert back.encode(text) == encoding.encode(text)
    native = tmp_path / "cl100k.bpe.json"
    formats.save(ours, native)
    again = bpe.load(str(native))
    assert again.vocab == ours.vocab and again.merges is None
    assert again.encode(HOSTILE[2]) == encoding.encode(HOSTILE[2])


def test_bad_files_raise_one_line(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    with pytest.raises(FormatError):
        bpe.load(str(junk))
    not_tok = tmp_path / "x.json"
    not_tok.write_text('{"hello": 1}')
    with pytest.raises(FormatError, match="neither"):
        bpe.load(str(not_tok))
    with pytest.raises(FileNotFoundError):
        bpe.load(str(tmp_path / "missing.bpe.json"))


def test_failed_save_leaves_no_file(trained, tmp_path):
    with pytest.raises(FormatError):
        formats.save(trained, tmp_path / "nofolder" / "x.bpe.json")
    shuffled = bpe.Tokenizer(trained.pattern, trained.vocab, list(reversed(trained.merges[:5]))
                             + trained.merges[5:], {}, "shuffled")
    target = tmp_path / "shuffled.tiktoken"
    with pytest.raises(FormatError, match="merge order"):
        formats.save(shuffled, target)
    assert list(tmp_path.iterdir()) == []
