"""IncrementalDecoder: text out as soon as it is complete UTF-8, never half a character, and the
streamed text of every prefix equals the full decode (oracle: Tokenizer.decode, itself checked
against tiktoken in test_roundtrip_decode)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from llm_playground.bpe.reference import load_reference

pytestmark = pytest.mark.network


def _check_every_prefix(tok, ids):
    final = tok.decode(ids)
    decoder = tok.incremental_decoder()
    emitted = ""
    for k, i in enumerate(ids, 1):
        emitted += decoder.push(i)
        # never a premature character: what was emitted stays a prefix of every later decode
        assert tok.decode(ids[:k]).startswith(emitted)
        assert final.startswith(emitted)
        # this prefix streamed and flushed equals its full decode
        fresh = tok.incremental_decoder()
        assert "".join(fresh.push(j) for j in ids[:k]) + fresh.flush() == tok.decode(ids[:k])
    assert emitted + decoder.flush() == final


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_stream_equals_full_decode_for_text(text):
    tok, _ = load_reference("cl100k_base")
    _check_every_prefix(tok, tok.encode_ordinary(text))


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(0, 100255), max_size=25))
def test_stream_equals_full_decode_for_arbitrary_ids(ids):
    tok, _ = load_reference("cl100k_base")
    _check_every_prefix(tok, ids)


def test_never_half_a_character():
    tok, _ = load_reference("cl100k_base")
    text = "😀🇫🇷漢字 e\u0301 👨\u200d👩\u200d👧"
    ids = tok.encode_ordinary(text)
    decoder = tok.incremental_decoder()
    out = []
    for i in ids:
        piece = decoder.push(i)
        assert "\ufffd" not in piece
        out.append(piece)
    assert any(p == "" for p in out), "an emoji split over tokens should hold text back"
    assert "".join(out) + decoder.flush() == text
    assert decoder.pending == b""


def test_special_tokens_stream_as_text():
    tok, _ = load_reference("cl100k_base")
    ids = tok.encode("hi<|endoftext|>", allowed_special="all")
    decoder = tok.incremental_decoder()
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == "hi<|endoftext|>"
