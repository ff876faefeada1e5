"""The tiktoken rule's byte-slice merge (`merge_rank_bytes`, used on piece-cache misses) gives
tiktoken's ids on small hand-made rank vocabularies, where ties, unreachable tokens and
long runs of one pair are common (the real vocabularies rarely provoke them).

Oracle: `tiktoken.Encoding` built from the same ranks, with a split pattern that keeps the whole
text as one piece, so the merge itself is what is compared.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from llm_playground.bpe import Tokenizer
from llm_playground.bpe.merge import HEAP_MIN_LEN

import tiktoken

WHOLE_TEXT = r"[\s\S]+"  # one piece: no pre-tokenization between us and the merge
ALPHABET = "abc "


def _tokens(draw_list: list[str]) -> list[bytes]:
    seen: dict[bytes, None] = {}
    for t in draw_list:
        if len(t) >= 2:
            seen.setdefault(t.encode(), None)
    return list(seen)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(merged=st.lists(st.text(ALPHABET, min_size=2, max_size=6), max_size=40),
       texts=st.lists(st.text(ALPHABET, min_size=0, max_size=HEAP_MIN_LEN + 20),
                      min_size=1, max_size=8),
       seed=st.randoms(use_true_random=False))
def test_rank_bytes_merge_matches_tiktoken(merged, texts, seed):
    multi = _tokens(merged)
    seed.shuffle(multi)  # ranks in random order: a longer token may outrank its parts
    ranks = {bytes([b]): b for b in range(256)}
    for rank, token in enumerate(multi, start=256):
        ranks[token] = rank
    ours = Tokenizer(WHOLE_TEXT, {r: t for t, r in ranks.items()}, None, {})
    oracle = tiktoken.Encoding(name="small", pat_str=WHOLE_TEXT, mergeable_ranks=ranks,
                               special_tokens={})
    for text in texts:
        assert ours.encode_ordinary(text) == oracle.encode_ordinary(text), text
