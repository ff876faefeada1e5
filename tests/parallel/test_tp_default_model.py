"""Tensor parallelism on the default model (SmolLM2-135M: 9 query / 3 KV heads), float32, CPU.

Oracle: the one-rank Engine on the same file. TP=3 holds one whole KV head (3 query heads) per
rank; TP=2 splits in whole GQA groups, 2 + 1 KV heads (6 + 3 query heads); TP=4 is refused
with a message naming the sizes that work (1, 2, 3). What you should see: prompt logits within
1e-4 relative, and 8 greedy ids equal (a flip only at a reported near-tie). Marked slow: each
rank loads and dequantises the whole file (a few seconds each on 2 shared cores).
"""
from __future__ import annotations

import pytest

from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.parallel.random_model import ModelSource
from llm_playground.model.parallel.tp_engine import start_tensor_parallel
from llm_playground.model.parallel.tp_plan import ShardError, shard_plan
from llm_playground.model.parallel.tp_runner import private_logits

from tp_helpers import check_greedy, engine_config, one_rank

pytestmark = [pytest.mark.slow, pytest.mark.network]

SOURCE = ModelSource(path=None, dtype="float32")


@pytest.fixture(scope="module")
def reference():
    loaded, engine = one_rank(SOURCE, engine_config(num_blocks=64, block_size=16))
    return loaded, engine


def test_tp4_is_refused_with_the_sizes_that_work(reference):
    loaded, _ = reference
    with pytest.raises(ShardError, match=r"tensor parallel 4: 3 KV heads .*sizes that work for "
                                         r"this model: 1, 2, 3"):
        shard_plan(loaded.config, 4)


@pytest.mark.parametrize("world,kv_split", [(2, [2, 1]), (3, [1, 1, 1])], ids=["tp2", "tp3"])
def test_default_model_equals_one_rank(reference, world, kv_split):
    loaded, ref = reference
    tok = loaded.tokenizer
    prompt = tok.encode("The capital of France is")
    params = SamplingParams(max_tokens=8, temperature=0.0)
    want = ref.generate(prompt, params)
    tp = start_tensor_parallel(SOURCE, world, engine_config(num_blocks=64, block_size=16))
    try:
        assert [r.kv_heads for r in tp.rank_shares] == kv_split
        assert [r.q_heads for r in tp.rank_shares] == [3 * k for k in kv_split]
        got = tp.generate(prompt, params)
        note = check_greedy(loaded, prompt, want, got)
        if note:
            print("reported:", note)
        full = private_logits(loaded.model, prompt + want)
        rel = float((tp.prompt_logits(prompt + want) - full).abs().max() / full.abs().max())
        assert rel < 1e-4, rel
    finally:
        tp.close()
