"""The engine with an 8-bit KV cache (EngineConfig.kv_dtype): the pool it sizes from a budget
follows the per-block formula (about twice the blocks of the float cache), the runner's pool is
8-bit with scales, and generation stays close to the float cache's: the first greedy tokens agree,
prefix-cache hits and copy-on-write forks (n > 1) give the same tokens as computing afresh.
Oracle: the same engine with the float KV cache (kv_dtype auto) on the same tiny model."""
from __future__ import annotations

import pytest
import torch

from engine_helpers import engine, tiny_config
from llm_playground.model.engine.config import EngineConfig, blocks_from_budget
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.network.kv_cache import bytes_per_block


def test_budget_buys_the_blocks_the_formula_says():
    mc = tiny_config()
    budget = 1 << 20
    for kv_dtype in (None, "int8", "fp8"):
        cfg = EngineConfig(kv_cache_bytes=budget, kv_dtype=kv_dtype)
        per = bytes_per_block(mc.num_layers, mc.num_kv_heads, mc.head_dim, torch.float32, 16, kv_dtype)
        assert blocks_from_budget(cfg, mc, torch.float32, "cpu") == budget // per
    f = blocks_from_budget(EngineConfig(kv_cache_bytes=budget), mc, torch.bfloat16, "cpu")
    q = blocks_from_budget(EngineConfig(kv_cache_bytes=budget, kv_dtype="int8"), mc, torch.bfloat16, "cpu")
    assert q / f == pytest.approx(2 * 8 / (8 + 2), rel=0.01)      # head dim 8: 1.6x; 64: 1.94x


def test_bad_kv_dtype_is_refused():
    with pytest.raises(ValueError, match="kv_dtype must be auto, int8 or fp8"):
        EngineConfig(kv_dtype="int4")


@pytest.mark.parametrize("kv_dtype", ["int8", "fp8"])
def test_generation_with_8bit_kv_stays_near_the_float_cache(kv_dtype):
    e8 = engine(num_blocks=64, kv_dtype=kv_dtype)
    assert e8.runner.kv.quantised and e8.runner.kv.k_pool.dtype != torch.float32
    assert e8.kv_bytes_per_block == bytes_per_block(2, 2, 8, torch.float32, 4, kv_dtype)
    ef = engine(num_blocks=64)
    prompt = list(b"the quick brown fox")
    greedy = SamplingParams(max_tokens=12, ignore_eos=True)
    a, b = ef.generate(prompt, greedy), e8.generate(prompt, greedy)
    if kv_dtype == "int8":                             # fp8's 3 mantissa bits flip a near-tie
        assert a[:4] == b[:4], (a, b)                  # on this tiny model at token 2
    again = e8.generate(prompt, greedy)                # prefix-cache hit on the 8-bit blocks
    assert again == b
    forked = e8.generate(prompt, SamplingParams(max_tokens=12, ignore_eos=True, n=2, seed=1,
                                                temperature=0.0))
    assert forked == b                                 # n = 2: sample 0 after a CoW fork


@pytest.mark.parametrize("kv_dtype,tol", [("int8", 0.05), ("fp8", 0.3)])
def test_decode_logits_read_from_8bit_kv(kv_dtype, tol):
    """Decode steps whose keys all come from the cache: logits within tol (relative) of the float
    cache's, float32 compute, the reference attention (the CPU path). Measured 2026-12-07: 0.031
    (int8) and 0.18 (fp8) on this tiny random model, whose large weights make attention sharp;
    the bounds leave room for seeds, not for a broken path (a wrong scale gives ~1)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parents[1] / "model"))
    from engine_helpers import tiny_loaded
    from paged_helpers import Pager
    from llm_playground.model.network.kv_cache import KVCache
    loaded = tiny_loaded(3)
    cfg = loaded.config
    out = []
    for kd in (None, kv_dtype):
        pager = Pager(cfg, num_blocks=24, block_size=4, seed=1)
        pager.kv = KVCache(cfg.num_layers, 24, 4, cfg.num_kv_heads, cfg.head_dim, torch.float32,
                           "cpu", kv_dtype=kd)
        ids = list(range(30, 60, 2))
        logits = [loaded.model.compute_logits(loaded.model.forward(
            torch.tensor(ids), pager.batch([(0, len(ids))]), pager.kv))[-1]]
        for t in (5, 9, 200):
            logits.append(loaded.model.compute_logits(loaded.model.forward(
                torch.tensor([t]), pager.batch([(0, 1)]), pager.kv))[-1])
        out.append(torch.stack(logits))                                     # (4, V)
    err = ((out[1] - out[0]).norm(dim=-1) / out[0].norm(dim=-1)).max().item()
    assert 0 < err < tol, err


def test_header_and_kv_view_say_what_is_stored():
    """The header's dtype text names the 8-bit KV, and the KV view's formula multiplies out to
    the pool's real bytes per block (its tensors' sizes); the float cache keeps its old line."""
    from llm_playground.playground.engine_factory import describe
    from llm_playground.playground.kv_view import block_formula
    e8 = engine(num_blocks=32, kv_dtype="int8")
    info = describe(e8, e8.loaded)
    assert info.dtype == "float32 weights, float32, int8 KV" and info.kv_dtype == "int8"
    kv = e8.runner.kv
    real = sum(t.numel() * t.element_size() for t in
               (kv.k_pool, kv.v_pool, kv.k_scale_pool, kv.v_scale_pool)) // kv.num_blocks
    line = block_formula(info)
    assert "int8 K/V + f16 scale per token" in line and line.endswith(f"= {real:,} B")
    mc = e8.loaded.config
    assert 2 * mc.num_layers * mc.num_kv_heads * (mc.head_dim * info.dtype_bytes
                                                  + info.kv_scale_bytes) * 4 == real
    ef = engine(num_blocks=32)
    plain = describe(ef, ef.loaded)
    assert plain.dtype == "float32" and block_formula(plain).startswith("per block: 2 × ")
