"""Our trainer learns exactly the merges of Hugging Face tokenizers' BpeTrainer.

Oracle: `tokenizers` BpeTrainer on the same documents, with the same pattern (Split, isolated)
followed by ByteLevel(use_regex=False), the full 256-byte initial alphabet and the same
min_frequency. Our documented tie-break is HF's, so the merge lists agree entirely, ties
included. One difference is HF's, not ours: its Oniguruma regex reads `\\p{N}{1,3}+` as
"one or more runs of 1-3 digits" instead of a possessive {1,3}, so HF is given the equivalent
non-possessive `\\p{N}{1,3}` (the test checks that the pre-token counts agree first).
"""
from __future__ import annotations

import random
import sysconfig
from collections import Counter
from pathlib import Path

import pytest

from llm_playground import bpe
from llm_playground.bpe import patterns
from llm_playground.bpe.counting import count_pretokens

import tokenizers
from tokenizers import Regex, models, pre_tokenizers, trainers  # noqa: E402


def _byte_decoder() -> dict[str, int]:
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


DEC = _byte_decoder()


def unbyte(s: str) -> bytes:
    return bytes(DEC[ch] for ch in s)


def hf_train(docs, vocab_size, pattern, min_frequency, special_tokens=()):
    hf = tokenizers.Tokenizer(models.BPE())
    hf_pattern = pattern.replace("{1,3}+", "{1,3}")
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(hf_pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(docs, trainer)
    return hf


def hf_merges(hf) -> list[tuple[bytes, bytes]]:
    import json
    raw = json.loads(hf.to_str())["model"]["merges"]
    pairs = [m if isinstance(m, list) else m.split(" ") for m in raw]
    return [(unbyte(a), unbyte(b)) for a, b in pairs]


def stdlib_docs(n_files: int) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("email/*.py")) + sorted(root.glob("json/*.py"))
    return [f.read_text(encoding="utf-8") for f in files[:n_files]]


@pytest.mark.parametrize("pattern_name", ["cl100k", "cl100k_2023", "gpt2", "o200k"])
def test_identical_merges_on_real_text(pattern_name):
    docs = stdlib_docs(12)
    pattern = patterns.resolve(pattern_name)
    hf = hf_train(docs, 1500, pattern, min_frequency=2)
    hf_counts = Counter()
    for doc in docs:
        hf_counts.update(unbyte(p) for p, _ in hf.pre_tokenizer.pre_tokenize_str(doc))
    ours_counts = count_pretokens(iter(docs), pattern)
    assert Counter({k.encode(): v for k, v in ours_counts.items()}) == hf_counts
    ours = bpe.train(iter(docs), 1500, pattern=pattern, min_frequency=2)
    assert ours.merges == hf_merges(hf)
    assert len(ours.merges) > 1000


@pytest.mark.parametrize("seed", range(6))
def test_identical_merges_with_many_ties(seed):
    rng = random.Random(seed)
    alphabet = list("ab c\n") + ["é", "漢", "1", "!"]
    docs = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200))) for _ in range(30)]
    for min_frequency in (0, 1, 3):
        hf = hf_train(docs, 400, patterns.CL100K, min_frequency)
        ours = bpe.train(iter(docs), 400, pattern="cl100k", min_frequency=min_frequency)
        assert ours.merges == hf_merges(hf), (seed, min_frequency)


def test_special_tokens_leave_merges_alone_and_take_the_last_ids():
    docs = stdlib_docs(6)
    specials = ("<|endoftext|>", "<|pad|>")
    hf = hf_train(docs, 800, patterns.CL100K, 2, specials)
    ours = bpe.train(iter(docs), 800, special_tokens=specials)
    assert ours.merges == hf_merges(hf)
    assert ours.vocab_size == 800 == hf.get_vocab_size()
    assert ours.special_tokens == {"<|endoftext|>": 798, "<|pad|>": 799}
    ids = ours.encode("x<|pad|>y", allowed_special="all")
    assert 799 in ids and ours.decode(ids) == "x<|pad|>y"


def test_identical_merges_on_runs_of_one_character():
    # overlapping pairs: "aaa" holds (a, a) twice, and merging leaves one "a" over
    docs = ["aaa aaa aaa bc bc bc bc bc", "a" * 1001, " \n" * 300, "xxxxxxx yyyyyy zzz " * 7]
    for min_frequency in (1, 2):
        hf = hf_train(docs, 300, patterns.GPT2, min_frequency)
        ours = bpe.train(iter(docs), 300, pattern="gpt2", min_frequency=min_frequency)
        assert ours.merges == hf_merges(hf)
