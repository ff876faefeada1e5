"""Special tokens behave exactly as tiktoken's: same ids, same ValueError cases and message.

Oracle: the real `tiktoken.Encoding` for cl100k_base / o200k_base (bpe.reference).
"""
from __future__ import annotations

import itertools

import pytest

from llm_playground.bpe.reference import load_reference

pytestmark = pytest.mark.network

TEXTS = [
    "hello <|endoftext|> world",
    "<|endoftext|><|endoftext|>",
    "a<|fim_prefix|>b<|fim_middle|>c<|fim_suffix|>d<|endofprompt|>",
    "<|endoftext|",
    "no special here",
    "<|endoftext|> <|endofprompt|>\n",
    "x <|endoftext|>   \n  ",
]
ALLOWED = [frozenset(), "all", {"<|endoftext|>"}, {"<|endofprompt|>"},
           {"<|endoftext|>", "<|fim_prefix|>"}]
DISALLOWED = ["all", (), {"<|endoftext|>"}, {"<|endofprompt|>"}, {"not-a-special"}]


def _outcome(fn):
    try:
        return ("ok", fn())
    except ValueError as exc:
        return ("ValueError", str(exc))


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_special_token_matrix(name):
    ours, enc = load_reference(name)
    checked = 0
    for text, allowed, disallowed in itertools.product(TEXTS, ALLOWED, DISALLOWED):
        want = _outcome(lambda: enc.encode(text, allowed_special=allowed,
                                           disallowed_special=disallowed))
        got = _outcome(lambda: ours.encode(text, allowed_special=allowed,
                                           disallowed_special=disallowed))
        assert got == want, (text, allowed, disallowed)
        checked += 1
    assert checked == len(TEXTS) * len(ALLOWED) * len(DISALLOWED)


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_default_raises_and_encode_ordinary_ignores(name):
    ours, enc = load_reference(name)
    text = "hi <|endoftext|>"
    with pytest.raises(ValueError, match="disallowed special token"):
        ours.encode(text)
    assert ours.encode_ordinary(text) == enc.encode_ordinary(text)
    eot = enc.encode(text, allowed_special="all")
    assert ours.encode(text, allowed_special="all") == eot
    assert ours.decode(eot) == text
    assert ours.is_special(eot[-1]) and not ours.is_special(eot[0])
