"""Speculation's small parts: the prompt-lookup proposer against a brute-force search, the
n-gram buffer, `--speculate` parsing, the block manager's rollback accounting, and the
self-speculation draft (first L layers) against the target's own layers.

Oracles: a plain Python scan for prompt lookup (every earlier window compared), a recount of
the block pool (check_invariants) for the rollback, and a whole-sequence forward through the
first L decoder layers written out with the network's own modules for the draft.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_helpers import tiny_loaded
from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.ngram_proposer import NgramIndex, propose
from llm_playground.model.engine.spec_config import SpecConfig, parse_speculate


def brute_propose(ids: list[int], k: int, n_max: int, n_min: int) -> list[int]:
    for n in range(min(n_max, len(ids) - 1), n_min - 1, -1):
        tail = ids[len(ids) - n:]
        for i in range(len(ids) - n - 1, -1, -1):     # latest window first, the tail excluded
            if ids[i:i + n] == tail:
                return ids[i + n:i + n + k]
    return []


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(st.integers(0, 5), min_size=0, max_size=40), k=st.integers(1, 8),
       n_max=st.integers(1, 5))
def test_propose_equals_brute_force(ids, k, n_max):
    assert propose(ids, k, n_max, 1) == brute_propose(ids, k, n_max, 1)


def test_ngram_index_grows_with_the_sequence():
    idx = NgramIndex()
    prompt, out = list(range(50)), []
    for t in range(200):
        out.append(t % 7)
        assert idx.sync(prompt, out).tolist() == prompt + out
    assert idx.sync([1, 2], []).tolist() == [1, 2]                # a new, shorter sequence


@pytest.mark.parametrize("text,want", [
    ("off", SpecConfig()), (None, SpecConfig()), ("ngram:4", SpecConfig("ngram", 4)),
    ("draft:models/small.gguf:3", SpecConfig("draft", 3, draft_path="models/small.gguf")),
    ("draft:C:\\m\\s.gguf:2", SpecConfig("draft", 2, draft_path="C:\\m\\s.gguf")),
    ("draft:layers=12:5", SpecConfig("draft", 5, draft_layers=12)),
])
def test_parse_speculate(text, want):
    got = parse_speculate(text)
    assert got == want
    assert parse_speculate(str(got)) == got          # str() spells it back


@pytest.mark.parametrize("text,message", [
    ("ngram:x", "K must be an integer"), ("ngram:17", "between 1 and 16"),
    ("draft:layers=0:3", "L >= 1"), ("draft:layers=a:3", "integer L"),
    ("lookahead:3", "unknown method"), ("draft::3", "needs a model and K"),
])
def test_parse_speculate_refuses_in_one_line(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_speculate(text)
    assert "\n" not in str(info.value)


def test_roll_back_frees_the_tail_and_unfills():
    bm = BlockManager(num_blocks=10, block_size=4)
    bm.admit(1, list(range(6)))
    bm.prepare_write(1, 0, 6)
    bm.touch_written(1, 0, 6)
    bm.commit(1, list(range(6)), 6)                   # block 0 full and hashed
    free0 = bm.num_available
    bm.prepare_write(1, 6, 13)                        # a verify row reaching into 2 new blocks
    bm.touch_written(1, 6, 13)
    assert bm.num_available == free0 - 2 and len(bm.table(1)) == 4
    bm.roll_back(1, 7)                                # one proposal accepted: 7 positions valid
    assert len(bm.table(1)) == 2 and bm.num_available == free0
    assert bm.pool.fill(bm.table(1)[1]) == 3 and bm.unfilled_slots == 1
    bm.check_invariants()
    rows, data = bm.take_table_updates()
    assert (data[list(rows).index(bm.table_row(1))][2:] == -1).all()   # the device row too


def test_first_layers_draft_equals_the_target_cut_short():
    """FirstLayers(target, L) over a prompt: the logits of the target's first L layers, then
    its final norm and head, computed here from the modules directly (no paging)."""
    from engine_helpers import last_logits
    from llm_playground.model.engine.draft_runner import FirstLayers
    loaded = tiny_loaded(0, num_layers=3)
    L = 2
    cut = tiny_loaded(0, num_layers=3)
    cut.model.layers = cut.model.layers[:L]           # the same weights, L layers
    ids = [3, 9, 200, 7, 7, 41]
    want = last_logits(cut, ids)
    draft = FirstLayers(loaded.model, L)
    fake = type(loaded)(**{**loaded.__dict__, "model": draft})
    got = last_logits(fake, ids)
    assert torch.allclose(got, want, atol=1e-5)
    full = last_logits(loaded, ids)
    assert not torch.allclose(got, full, atol=1e-3)   # and it is not the full target


def test_layers_draft_must_be_shorter_than_the_target():
    from engine_helpers import engine
    from llm_playground.model.network.weight_contract import ModelLoadError
    with pytest.raises(ModelLoadError, match="L must be below that"):
        engine(speculate="draft:layers=2:3")           # the tiny target has 2 layers
