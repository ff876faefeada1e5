"""decode(encode(x)) == x for every str without lone surrogates; lone surrogates become U+FFFD
as in tiktoken. decode_bytes / decode / id_to_bytes agree with tiktoken's decoder."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from llm_playground.bpe.reference import load_reference

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def pair():
    return load_reference("cl100k_base")


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=100))
def test_roundtrip_any_text(text):
    ours, _ = load_reference("cl100k_base")
    assert ours.decode(ours.encode_ordinary(text)) == text
    ours2, _ = load_reference("o200k_base")
    assert ours2.decode(ours2.encode(text, disallowed_special=())) == text


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(exclude_categories=()), max_size=30))
def test_lone_surrogates_become_replacement_char(text):
    ours, enc = load_reference("cl100k_base")
    fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert ours.decode(ours.encode_ordinary(text)) == fixed
    assert ours.decode(ours.encode_ordinary(text)) == enc.decode(enc.encode_ordinary(text))


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(0, 100255), max_size=20))
def test_decode_matches_tiktoken_on_arbitrary_ids(ids):
    ours, enc = load_reference("cl100k_base")
    assert ours.decode_bytes(ids) == enc.decode_bytes(ids)
    assert ours.decode(ids) == enc.decode(ids)  # both errors="replace"


def test_unknown_id_is_a_clear_error(pair):
    ours, _ = pair
    with pytest.raises(ValueError, match="unknown token id"):
        ours.decode([1, 10**9])
    with pytest.raises(ValueError, match="unknown token id"):
        ours.id_to_bytes(-1)
    assert ours.token_to_id(b"this is surely not one token \xff") is None
