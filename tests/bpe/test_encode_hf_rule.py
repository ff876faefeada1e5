"""The Hugging Face merge rule (merges given): our encoder gives the ids of `tokenizers` itself.

Oracle: a `tokenizers` BPE model trained here, whose ids are those of a GGUF/HF vocab (special
tokens first, the 256 byte tokens in byte-to-unicode code-point order, not byte order). We build
our Tokenizer from its vocab and merges and compare ids on real and generated text. Also checks
that the heap merge and the simple merge agree on long pieces, and the SMOLLM pattern against
HF's Digits + ByteLevel pre-tokenizer.
"""
from __future__ import annotations

import json
import random
import unicodedata
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from llm_playground.bpe import Tokenizer, patterns
from llm_playground.bpe.merge import merge_heap, merge_simple

import tokenizers
from tokenizers import Regex, models, pre_tokenizers, trainers  # noqa: E402

PATTERN = patterns.CL100K_2023  # no possessive quantifiers: HF's Oniguruma reads it as we do
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


# Characters that Python's own (older) Unicode tables know: HF's regex library and `regex` may
# disagree on the category of recently added code points, which is not what is tested here.
KNOWN_CHARS = st.characters(exclude_categories=("Cs",)).filter(lambda c: unicodedata.category(c) != "Cn")


def _byte_decoder() -> dict[str, int]:
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


DEC = _byte_decoder()


def _unbyte(s: str) -> bytes:
    return bytes(DEC[ch] for ch in s)


def _docs() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("email/*.py"))[:10] + sorted(root.glob("encodings/[a-c]*.py"))[:10]
    return [f.read_text(encoding="utf-8") for f in files]


@pytest.fixture(scope="module")
def pair():
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    hf.train_from_iterator(_docs(), trainer)
    model = json.loads(hf.to_str())["model"]
    vocab = {i: _unbyte(t) for t, i in model["vocab"].items() if t not in SPECIALS}
    merges = [tuple(_unbyte(x) for x in (m if isinstance(m, list) else m.split(" ")))
              for m in model["merges"]]
    specials = {t: model["vocab"][t] for t in SPECIALS}
    ours = Tokenizer(PATTERN, vocab, merges, specials, name="hf-trained")
    assert ours._byte_ids != list(range(256))  # byte tokens are not ids 0..255 here
    return ours, hf


def test_real_text(pair):
    ours, hf = pair
    for doc in _docs()[::3]:
        assert ours.encode_ordinary(doc) == hf.encode(doc).ids


@settings(max_examples=300, deadline=None)
@given(text=st.text(KNOWN_CHARS, max_size=60))
def test_generated_text(pair, text):
    ours, hf = pair
    assert ours.encode_ordinary(text) == hf.encode(text).ids


def test_long_pieces_same_for_heap_and_simple(pair):
    ours, hf = pair
    rng = random.Random(0)
    for _ in range(30):
        text = "".join(rng.choice("eeet_aa ") for _ in range(rng.randint(130, 600)))
        ids = [ours._byte_ids[b] for b in text.encode()]
        assert merge_heap(ids, ours._pairs) == merge_simple(list(ids), ours._pairs)
    long = "e" * 5000 + "t" * 3000
    assert ours.encode_ordinary(long) == hf.encode(long).ids


def test_merge_tree_rebuilds_the_token(pair):
    ours, _ = pair

    def leaves(tree):
        return [tree] if isinstance(tree, int) else leaves(tree[1]) + leaves(tree[2])
    for i in range(len(SPECIALS) + 256, ours.vocab_size, 37):
        tree = ours.merge_tree(i)
        assert tree[0] == i
        assert b"".join(ours.id_to_bytes(x) for x in leaves(tree)) == ours.id_to_bytes(i)
        assert all(len(ours.id_to_bytes(x)) == 1 for x in leaves(tree))


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.sampled_from(list("a1 2\n\t34x'sé漢!")), max_size=40))
def test_smollm_pattern_matches_hf_digits_then_bytelevel(text):
    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                            use_regex=True)])
    want = [_unbyte(p).decode("utf-8") for p, _ in pre.pre_tokenize_str(text)]
    assert patterns.compiled(patterns.SMOLLM).findall(text) == want


@settings(max_examples=300, deadline=None)
@given(text=st.text(KNOWN_CHARS, max_size=40))
def test_smollm_pattern_on_any_text(text):
    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                            use_regex=True)])
    want = [_unbyte(p).decode("utf-8") for p, _ in pre.pre_tokenize_str(text)]
    assert patterns.compiled(patterns.SMOLLM).findall(text) == want
