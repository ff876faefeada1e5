"""`--weights` under `--tensor-parallel`: honoured (int8, int4: each rank quantises its own shard
after slicing, as the single-rank loader packs a whole matrix) or refused with one line (native:
a GGUF's blocks cannot be sliced), never silently dropped.

Oracles: the one-rank model of the same source and --weights (its own quantisation error against
float32 sets the bar, times 2: row shards get scales of their own columns, so TP int4/int8 is
not bitwise one-rank), the QuantLinear's packed format (what the kernels read), and the CLI's
ModelSource (the flags reach the ranks)."""
from __future__ import annotations

import dataclasses
from argparse import Namespace

import pytest
import torch

from llm_playground.model.parallel import tp_engine
from llm_playground.model.parallel.tp_engine import start_tensor_parallel
from llm_playground.model.parallel.tp_runner import private_logits
from llm_playground.playground.engine_args import engine_config_from_args

from tp_helpers import engine_config, one_rank, prompts, tiny_source


def packed_kind(linear) -> str:
    return getattr(linear, "stored", type(linear).__name__)         # QuantLinear: "int4 g16", ...


@pytest.mark.parametrize("weights", ["int4", "int8"])
def test_quantised_shards_honour_weights(weights):
    source = tiny_source(4, 2, dtype="float32")
    float_loaded, _ = one_rank(source, engine_config())
    q_source = dataclasses.replace(source, weights=weights, group_size=16)
    q_loaded, _ = one_rank(q_source, engine_config())
    assert q_loaded.weight_format == weights
    tp = start_tensor_parallel(q_source, 2, engine_config())
    try:
        layer = tp.loaded.model.layers[0]
        assert tp.loaded.weight_format == weights and tp.loaded.dtype == torch.float32
        kinds = {packed_kind(layer.qkv_proj).split()[0], packed_kind(layer.o_proj.inner).split()[0],
                 packed_kind(layer.down_proj.inner).split()[0]}
        assert kinds == {weights}, kinds                      # row shards of 16 columns: "per-channel"
        assert packed_kind(layer.qkv_proj) == packed_kind(q_loaded.model.layers[0].qkv_proj)
        for p in prompts(2, seed=3):
            want = private_logits(float_loaded.model, p).float()                 # (T, V)
            bar = float((private_logits(q_loaded.model, p).float() - want).abs().max())
            assert bar > 0                                    # the format changed something
            assert float((tp.prompt_logits(p).float() - want).abs().max()) < 2 * bar + 1e-3
    finally:
        tp.close()


def test_native_weights_are_refused_before_ranks_start(monkeypatch):
    monkeypatch.setattr(tp_engine.mp, "get_context", lambda *a: pytest.fail("ranks started"))
    source = dataclasses.replace(tiny_source(4, 2), weights="native")
    with pytest.raises(ValueError, match="--weights native is not supported with --tensor-parallel"):
        start_tensor_parallel(source, 2, engine_config())


def test_the_flags_reach_the_ranks(monkeypatch):
    from llm_playground.playground import parallel_engine
    seen = {}

    class Stop(Exception):
        pass

    def fake_start(source, n, config):
        seen.update(source=source, n=n)
        raise Stop
    monkeypatch.setattr(tp_engine, "start_tensor_parallel", fake_start)
    args = Namespace(model="m.gguf", tensor_parallel=2, weights="int4", group_size=32, dtype="float32")
    with pytest.raises(Stop):
        parallel_engine.tensor_parallel_engine(args, engine_config_from_args(args))
    s = seen["source"]
    assert (s.path, s.dtype, s.weights, s.group_size, seen["n"]) == ("m.gguf", "float32", "int4", 32, 2)
