"""The CPU decode fast path (model/network/cpu_decode.py) against the general layer path.

Oracle: the same model, cache and batch run with the fast path forced off (the reference
kernels, themselves checked against transformers in test_llama_vs_transformers.py). A tiny
random model, several sequences decoding together, each with its blocks scattered (the gather
path) or consecutive (the slice path); float32 must match bit for bit (same ops on the same
values), bfloat16 and int4 / int8 weights closely. Also: which batches the plan refuses.
"""
from __future__ import annotations

import copy

import pytest
import torch

import llm_playground.model.network.llama as llama_mod
from llm_playground.kernels.mask import MaskSpec
from llm_playground.kernels.quant_layout import quantize_int4, quantize_int8
from llm_playground.model.network.batch import AttentionBatch
from llm_playground.model.network.config import ModelConfig
from llm_playground.model.network.cpu_decode import plan_decode
from llm_playground.model.network.kv_cache import KVCache
from llm_playground.model.network.llama import LlamaForCausalLM

CFG = ModelConfig(vocab_size=101, hidden_size=64, intermediate_size=96, num_layers=3,
                  num_heads=6, num_kv_heads=2, head_dim=16, max_position=512)
BS = 4


def tiny_model(dtype, weights: str = "float") -> LlamaForCausalLM:
    model = LlamaForCausalLM(CFG, dtype, "cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=g) + 0.5 if p.dim() == 1
                    else torch.randn(p.shape, generator=g) * 0.3)
    if weights == "int8":
        model.quantize_projections(lambda parts, w: quantize_int8(w, None))
    elif weights == "int4":
        model.quantize_projections(lambda parts, w: quantize_int4(w, 32))
    return model.eval()


def decode_batch(tables: list[list[int]], lens: list[int], mask=None) -> AttentionBatch:
    """One decode per sequence: sequence b already holds lens[b] - 1 tokens, the new one last."""
    B = len(lens)
    width = max(len(t) for t in tables)
    bt = torch.full((B, width), -1, dtype=torch.int32)
    for b, t in enumerate(tables):
        bt[b, :len(t)] = torch.tensor(t, dtype=torch.int32)
    pos = [n - 1 for n in lens]
    slots = [tables[b][p // BS] * BS + p % BS for b, p in enumerate(pos)]
    return AttentionBatch(
        positions=torch.tensor(pos), slot_mapping=torch.tensor(slots),
        cu_seqlens_q=torch.arange(B + 1, dtype=torch.int32),
        context_lens=torch.tensor(lens, dtype=torch.int32), block_tables=bt, max_q_len=1,
        max_context_len=max(lens), num_decodes=B, has_holes=False,
        **({"mask": mask} if mask is not None else {}))


# sequence 0 scattered blocks (gather), 1 consecutive (slice), 2 a single partial block
TABLES = [[7, 2, 11, 5], [12, 13, 14], [3]]
LENS = [15, 10, 3]


def random_caches(dtype, g: torch.Generator) -> tuple[KVCache, KVCache]:
    """Two equal caches of random K/V drawn from g: one for each path."""
    kv = KVCache(CFG.num_layers, 16, BS, CFG.num_kv_heads, CFG.head_dim, dtype, "cpu")
    kv.k_pool.copy_(torch.randn(kv.k_pool.shape, generator=g))
    kv.v_pool.copy_(torch.randn(kv.v_pool.shape, generator=g))
    kv2 = copy.deepcopy(kv)
    kv2.k, kv2.v = list(kv2.k_pool.unbind(0)), list(kv2.v_pool.unbind(0))
    return kv, kv2


def run_both(model, dtype, monkeypatch):
    """(fast out, general out, fast cache, general cache): the same random cache, one decode step."""
    g = torch.Generator().manual_seed(1)
    kv, kv2 = random_caches(dtype, g)
    ids = torch.tensor([5, 17, 99])
    batch = decode_batch(TABLES, LENS)
    assert plan_decode(batch, model.rope_cos, model.rope_sin, BS, model.device, False) is not None
    fast = model.compute_logits(model(ids, batch, kv))
    monkeypatch.setattr(llama_mod, "plan_decode", lambda *a, **k: None)
    general = model.compute_logits(model(ids, batch, kv2))
    return fast, general, kv, kv2


def test_float32_fast_path_equals_general_path(monkeypatch):
    fast, general, kv, kv2 = run_both(tiny_model(torch.float32), torch.float32, monkeypatch)
    assert torch.equal(fast, general)
    assert torch.equal(kv.k_pool, kv2.k_pool) and torch.equal(kv.v_pool, kv2.v_pool)


@pytest.mark.parametrize("weights", ["float", "int8", "int4"])
def test_bfloat16_fast_path_close_to_general_path(monkeypatch, weights):
    fast, general, kv, kv2 = run_both(tiny_model(torch.bfloat16, weights), torch.bfloat16,
                                      monkeypatch)
    # layer 0's new K/V come before any attention: equal; later layers' follow its output
    assert torch.equal(kv.k_pool[0], kv2.k_pool[0]) and torch.equal(kv.v_pool[0], kv2.v_pool[0])
    assert (kv.k_pool.float() - kv2.k_pool.float()).abs().max() < 0.1
    err = (fast - general).abs().max().item()
    assert err < 0.05 * general.abs().max().item(), f"{weights}: max abs error {err}"
    assert torch.equal(fast.argmax(-1), general.argmax(-1))


def test_plan_refuses_what_it_does_not_cover():
    model = tiny_model(torch.float32)

    def plan(batch, quantised_kv=False, device=model.device):
        return plan_decode(batch, model.rope_cos, model.rope_sin, BS, device, quantised_kv)
    assert plan(decode_batch(TABLES, LENS)) is not None
    assert plan(decode_batch(TABLES, LENS), quantised_kv=True) is None       # 8-bit KV
    assert plan(decode_batch(TABLES, LENS, MaskSpec(window=8))) is None     # sliding window
    assert plan(decode_batch([[7, -1, 11, 5]] + TABLES[1:], LENS)) is None  # a hole
    assert plan(decode_batch(TABLES, LENS), device=torch.device("meta")) is None
    prefill = decode_batch(TABLES[:1], LENS[:1])
    prefill.max_q_len = 2                                                   # not all decodes
    assert plan(prefill) is None
    spans = plan(decode_batch(TABLES, LENS)).spans
    assert isinstance(spans[0][0], torch.Tensor) and spans[0][1] == 15      # gathered
    assert spans[1] == (12 * BS, 10) and spans[2] == (3 * BS, 3)           # sliced


def verify_batch(tables: list[list[int]], lens: list[int], num_decodes: int, q: int) -> AttentionBatch:
    """Decodes first (one token each), then verify rows of q tokens each (the last accepted
    token and q - 1 proposals), as the engine orders them; lens: keys after the write."""
    B = len(lens)
    width = max(len(t) for t in tables)
    bt = torch.full((B, width), -1, dtype=torch.int32)
    for b, t in enumerate(tables):
        bt[b, :len(t)] = torch.tensor(t, dtype=torch.int32)
    q_lens = [1] * num_decodes + [q] * (B - num_decodes)
    pos = [p for n, ql in zip(lens, q_lens) for p in range(n - ql, n)]
    owner = [b for b, ql in enumerate(q_lens) for _ in range(ql)]
    slots = [tables[b][p // BS] * BS + p % BS for b, p in zip(owner, pos)]
    cu = [0]
    for ql in q_lens:
        cu.append(cu[-1] + ql)
    return AttentionBatch(
        positions=torch.tensor(pos), slot_mapping=torch.tensor(slots),
        cu_seqlens_q=torch.tensor(cu, dtype=torch.int32),
        context_lens=torch.tensor(lens, dtype=torch.int32), block_tables=bt, max_q_len=max(q_lens),
        max_context_len=max(lens), num_decodes=num_decodes, has_holes=False,
        num_verify=B - num_decodes, verify_q_len=q if B > num_decodes else 0)


# a decode (sliced), then verify rows of 5 tokens: gathered blocks across a block edge, sliced
V_TABLES = [[12, 13, 14], [7, 2, 11, 5], [3, 4]]
V_LENS = [10, 15, 7]


def run_verify(model, dtype, monkeypatch, tables=V_TABLES, lens=V_LENS, num_decodes=1, q=5):
    g = torch.Generator().manual_seed(2)
    kv, kv2 = random_caches(dtype, g)
    batch = verify_batch(tables, lens, num_decodes, q)
    ids = torch.randint(0, CFG.vocab_size, (batch.num_tokens,), generator=g)
    assert plan_decode(batch, model.rope_cos, model.rope_sin, BS, model.device, False) is not None
    fast = model.compute_logits(model(ids, batch, kv))
    monkeypatch.setattr(llama_mod, "plan_decode", lambda *a, **k: None)
    general = model.compute_logits(model(ids, batch, kv2))
    return fast, general, kv, kv2


@pytest.mark.parametrize("num_decodes,q", [(1, 5), (0, 3), (2, 2)])
def test_float32_verify_rows_equal_general_path(monkeypatch, num_decodes, q):
    """Speculative verify rows (several causal queries per sequence) on the fast path: every
    row's logits and the written K/V bit for bit the general path's (kernels/reference.py)."""
    fast, general, kv, kv2 = run_verify(tiny_model(torch.float32), torch.float32, monkeypatch,
                                        num_decodes=num_decodes, q=q)
    assert fast.shape[0] == general.shape[0] == num_decodes + (3 - num_decodes) * q
    assert torch.equal(fast, general)
    assert torch.equal(kv.k_pool, kv2.k_pool) and torch.equal(kv.v_pool, kv2.v_pool)


@pytest.mark.parametrize("weights", ["float", "int8"])
def test_bfloat16_verify_rows_close_to_general_path(monkeypatch, weights):
    fast, general, kv, kv2 = run_verify(tiny_model(torch.bfloat16, weights), torch.bfloat16,
                                        monkeypatch)
    err = (fast - general).abs().max().item()
    assert err < 0.05 * general.abs().max().item(), f"{weights}: max abs error {err}"
    # argmax must agree wherever the general path's top two are further apart than the
    # rounding can move them (bfloat16 logits of a random tiny model tie exactly at times)
    top2 = general.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * err
    assert clear.sum() >= general.shape[0] // 2
    assert torch.equal(fast.argmax(-1)[clear], general.argmax(-1)[clear])


def test_plan_refuses_verify_batches_it_does_not_cover():
    model = tiny_model(torch.float32)

    def plan(batch):
        return plan_decode(batch, model.rope_cos, model.rope_sin, BS, model.device, False)
    good = verify_batch(V_TABLES, V_LENS, 1, 5)
    assert plan(good).q_lens == [1, 5, 5]
    mixed = verify_batch(V_TABLES, V_LENS, 1, 5)
    mixed.num_verify = 1                             # the last row is a prefill chunk, not a verify
    assert plan(mixed) is None
    holed = verify_batch([[12, 13, 14], [7, -1, 11, 5], [3, 4]], V_LENS, 1, 5)
    assert plan(holed) is None
