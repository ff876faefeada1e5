"""Tensor parallelism with int8 weights (the CPU's default storage): each rank quantises its own
shard after slicing (parallel/tp_shard.quantize_shard -> model/network/quant_linear.QuantLinear).

Oracle: the same random model at one rank, float32 weights. Column shards keep the full rows'
scales; row shards (o_proj, down_proj) get a scale per row of their own columns, so TP=2 int8 is
not bitwise one-rank int8. What you should see: the TP=2 int8 prompt logits within the int8
error of the float32 ones (the one-rank int8 model's own error sets the bar, times 2), and
greedy generation running to the end.
"""
from __future__ import annotations

import dataclasses

import torch

from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.parallel.tp_engine import start_tensor_parallel
from llm_playground.model.parallel.tp_runner import private_logits

from tp_helpers import engine_config, one_rank, prompts, tiny_source


def test_int8_shards_stay_within_int8_error():
    source = tiny_source(4, 2, dtype="float32")
    loaded, _ = one_rank(source, engine_config())
    q_source = dataclasses.replace(source, dtype="int8")
    q_loaded, _ = one_rank(q_source, engine_config())
    tp = start_tensor_parallel(q_source, 2, engine_config())
    try:
        assert tp.loaded.weight_format == "int8"
        assert type(tp.loaded.model.layers[0].qkv_proj).__name__ == "QuantLinear"
        for p in prompts(2, seed=3):
            want = private_logits(loaded.model, p).float()                        # (T, V)
            one = private_logits(q_loaded.model, p).float()
            got = tp.prompt_logits(p).float()
            bar = float((one - want).abs().max())
            assert bar > 0                                  # int8 changed something
            assert float((got - want).abs().max()) < 2 * bar + 1e-3
        ids = tp.generate(prompts(1, seed=5)[0], SamplingParams(max_tokens=6, temperature=0,
                                                                 ignore_eos=True))
        assert len(ids) == 6
    finally:
        tp.close()
