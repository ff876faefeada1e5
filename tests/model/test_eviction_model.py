"""Whole-model oracle for eviction + re-rotation: the perplexity benchmark's paged streaming loop.

A tiny random Llama (transformers) is read back by our loader. Under local:W, the benchmark's
`evaluate` streams the text in chunks through the paged cache, freeing blocks out of reach and
re-rotating kept keys; since a window without sinks depends only on relative positions, every
next-token log-probability must equal transformers' full forward at positions 0..N-1 with the
same sliding-window mask (a custom 4-D mask). Also checks that memory stays bounded and RoPE
positions stay below sinks + window + chunk + 2 blocks.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from llm_playground.model.weights import hf_folder
from llm_playground.model.weights.loader import build_model
from llm_playground.model.engine.attention_patterns import parse_pattern

import transformers
ROOT = Path(__file__).resolve().parents[2]


def load_benchmark():
    if "patterns_perplexity" in sys.modules:
        return sys.modules["patterns_perplexity"]
    spec = importlib.util.spec_from_file_location("patterns_perplexity",
                                                  ROOT / "benchmarks" / "patterns_perplexity.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["patterns_perplexity"] = mod   # dataclasses look their module up while building
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(5)
    cfg = transformers.LlamaConfig(vocab_size=89, hidden_size=48, intermediate_size=80,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=12, max_position_embeddings=256, tie_word_embeddings=True)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():   # widen the tiny random init so attention is far from uniform
        for p in hf.parameters():
            p.normal_(0, 0.3) if p.dim() == 2 else p.uniform_(0.5, 1.5)
    hf.save_pretrained(path)
    ours_cfg = hf_folder.read_hf_config(path)
    _, get = hf_folder.open_hf_weights(path, ours_cfg)
    ours = build_model(ours_cfg, get, "float32", torch.float32, torch.device("cpu"))
    loaded = SimpleNamespace(model=ours, config=ours_cfg, dtype=torch.float32,
                             device=torch.device("cpu"))
    return hf, loaded


@torch.no_grad()
def hf_nll_with_mask(hf, ids, spec) -> torch.Tensor:
    n = len(ids)
    allowed = spec.dense_matrix(n)                                         # (n, n) bool
    bias = torch.zeros(1, 1, n, n).masked_fill(~allowed, torch.finfo(torch.float32).min)
    logits = hf(torch.tensor([ids]), attention_mask=bias).logits[0].double()  # (n, V)
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return -logp.gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)      # (n-1,)


@pytest.mark.parametrize("window,chunk,block", [(10, 3, 4), (7, 1, 2), (16, 5, 8)])
def test_local_stream_with_eviction_equals_full_masked_forward(tiny, window, chunk, block):
    hf, loaded = tiny
    bench = load_benchmark()
    g = torch.Generator().manual_seed(window)
    ids = torch.randint(0, 89, (61,), generator=g).tolist()
    cfg = bench.EvalConfig(tokens=60, window=window, chunk=chunk, block_size=block)
    got = bench.evaluate(loaded, ids, f"local:{window}", cfg)
    nll = hf_nll_with_mask(hf, ids, parse_pattern(f"local:{window}").spec)
    assert got["ppl"] == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    assert got["ppl_first_window"] == pytest.approx(math.exp(nll[:window].mean()), rel=1e-5)
    assert got["ppl_after_window"] == pytest.approx(math.exp(nll[window:].mean()), rel=1e-5)
    assert got["peak_blocks"] <= -(-(window + chunk) // block) + 2        # bounded memory
    assert got["max_rope_position"] < window + chunk + 2 * block          # bounded positions


def test_dense_stream_equals_full_forward(tiny):
    hf, loaded = tiny
    bench = load_benchmark()
    ids = torch.randint(0, 89, (41,), generator=torch.Generator().manual_seed(1)).tolist()
    got = bench.evaluate(loaded, ids, "dense", bench.EvalConfig(tokens=40, window=8, chunk=6,
                                                                block_size=4))
    nll = hf_nll_with_mask(hf, ids, parse_pattern("dense").spec)
    assert got["ppl"] == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    assert got["max_rope_position"] == 39


def test_streaming_keeps_sinks_and_bounds_memory(tiny):
    _, loaded = tiny
    bench = load_benchmark()
    ids = torch.randint(0, 89, (121,), generator=torch.Generator().manual_seed(2)).tolist()
    got = bench.evaluate(loaded, ids, "streaming:2,12",
                         bench.EvalConfig(tokens=120, window=12, chunk=4, block_size=4))
    assert got["peak_blocks"] <= 1 + -(-(12 + 4) // 4) + 2
    assert got["max_rope_position"] < 4 + 12 + 4 + 2 * 4
    assert math.isfinite(got["ppl"])
