"""Re-rotation, eviction plans, and attention through a paged cache with holes, against oracles."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_playground.kernels.mask import MaskSpec
from llm_playground.kernels.reference import paged_attention_ref, rope_ref, write_kv_ref
from llm_playground.model.network.kv_cache import KVCache
from llm_playground.model.engine.attention_patterns import parse_pattern
from llm_playground.model.engine.eviction import plan_eviction, rerotate_keys, rope_offset

D, HKV, HQ = 16, 2, 4


def rope_tables(max_pos=512, dim=D, theta=10000.0):
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    ang = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv_freq[None, :]   # (P, D/2)
    return ang.cos().float(), ang.sin().float()


def rotate64(x, pos, theta=10000.0):
    """Independent float64 RoPE (rotate-half layout) at integer positions; x (T, H, D), pos (T,)."""
    dim = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    ang = pos.double()[:, None, None] * inv_freq                                     # (T, 1, D/2)
    x1, x2 = x.double().chunk(2, dim=-1)
    return torch.cat((x1 * ang.cos() - x2 * ang.sin(), x2 * ang.cos() + x1 * ang.sin()), dim=-1)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-6),
                                       (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("delta", [-48, -16, 5, 0])
def test_rerotate_composes_with_rope(dtype, tol, delta):
    g = torch.Generator().manual_seed(7)
    cos, sin = rope_tables()
    bs, nb, layers = 8, 6, 3
    kv = KVCache(layers, nb, bs, HKV, D, dtype, "cpu")
    raw = torch.randn(layers, nb * bs, HKV, D, generator=g)
    pos = torch.randint(60, 400, (nb * bs,), generator=g)
    for layer in range(layers):
        _, k_rot = rope_ref(raw[layer][:, :1], raw[layer], pos, cos, sin)
        kv.k[layer].copy_(k_rot.reshape(nb, bs, HKV, D))
        kv.v[layer].copy_(raw[layer].reshape(nb, bs, HKV, D))
    before_k, before_v = kv.k_pool.clone(), kv.v_pool.clone()
    moved = [4, 1, 4]   # a duplicate is rotated once
    rerotate_keys(kv, moved, delta, cos, sin)
    for layer in range(layers):
        _, want = rope_ref(raw[layer][:, :1], raw[layer], pos + delta, cos, sin)
        want = want.reshape(nb, bs, HKV, D)
        for b in range(nb):
            if b in moved:
                torch.testing.assert_close(kv.k[layer][b].float(), want[b].float(), atol=tol, rtol=tol)
            else:
                assert torch.equal(kv.k[layer][b], before_k[layer, b])
    assert torch.equal(kv.v_pool, before_v)


def test_rerotate_one_layer_leaves_the_others():
    cos, sin = rope_tables()
    kv = KVCache(2, 3, 4, HKV, D, torch.float32, "cpu")
    kv.k_pool.normal_()
    before = kv.k_pool.clone()
    rerotate_keys(kv, [2], -4, cos, sin, layer=1)
    assert torch.equal(kv.k[0], before[0]) and torch.equal(kv.k[1][:2], before[1][:2])
    assert not torch.equal(kv.k[1][2], before[1][2])
    with pytest.raises(ValueError):
        rerotate_keys(kv, [-1], -4, cos, sin)
    with pytest.raises(ValueError):
        rerotate_keys(kv, [0], -600, cos, sin)


def test_rope_offset_counts_holes_in_use():
    assert rope_offset([3, -1, -1, 7, -1], 40, 16) == 32   # 3 blocks in use; trailing -1 is unused
    assert rope_offset([3, 5], 20, 16) == 0


def test_plan_eviction_frees_prefix_past_sinks_and_shifts_the_rest():
    spec = MaskSpec(window=20, sinks=4)
    table = [10, 11, 12, 13, 14, 15, 16, 17]   # block 7 preallocated, not yet in use
    plan = plan_eviction(spec, table, 50, 8)   # unreachable keys: 4 <= j <= 30 -> blocks 1, 2
    assert plan.freed_logical == [1, 2] and plan.freed == [11, 12]
    assert plan.rerotate == [(-16, [13, 14, 15, 16])]
    table2 = [10, -1, -1, 13, 14, 15, 16, 17]
    plan2 = plan_eviction(spec, table2, 58, 8)  # unreachable: j <= 38 -> blocks 1..3
    assert plan2.freed_logical == [3] and plan2.rerotate == [(-8, [14, 15, 16, 17])]
    assert plan_eviction(parse_pattern("sparse:20,3").spec, table, 50, 8).empty


def dense_softmax64(q, keys, vals, allowed, scale):
    """q (Hq, D); keys/vals (n, Hkv, D) float64; allowed (n,) bool -> (Hq, D)."""
    rep = q.shape[0] // keys.shape[1]
    k = keys.repeat_interleave(rep, dim=1)                 # (n, Hq, D)
    v = vals.repeat_interleave(rep, dim=1)
    s = torch.einsum("hd,nhd->hn", q, k) * scale
    s = s.masked_fill(~allowed[None, :], -math.inf)
    return torch.einsum("hn,nhd->hd", s.softmax(-1), v)


@pytest.mark.parametrize("text", ["dense", "local:7", "atrous:3", "sparse:5,4", "streaming:3,9"])
def test_reference_attention_with_holes_equals_dense_softmax(text):
    spec = parse_pattern(text).spec
    g = torch.Generator().manual_seed(3)
    bs, nb = 4, 40
    k_cache = torch.randn(nb, bs, HKV, D, generator=g, dtype=torch.float64)
    v_cache = torch.randn(nb, bs, HKV, D, generator=g, dtype=torch.float64)
    seqs = [(1, 30), (5, 23), (11, 11), (1, 2)]            # (q_len, context_len)
    perm = torch.randperm(nb, generator=g).tolist()
    tables, holes = [], []
    for i, (_, n) in enumerate(seqs):
        row = [perm.pop() for _ in range(-(-n // bs))]
        hole = [b for b in range(len(row)) if b % 3 == 1 and (b + 1) * bs < n - 8]
        for b in hole:
            row[b] = -1
        tables.append(row + [-1] * (10 - len(row)))
        holes.append(hole)
    q_lens = [q for q, _ in seqs]
    q = torch.randn(sum(q_lens), HQ, D, generator=g, dtype=torch.float64)
    cu = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0)), dtype=torch.int32)
    ctx = torch.tensor([n for _, n in seqs], dtype=torch.int32)
    out = paged_attention_ref(q, k_cache, v_cache, cu, ctx, torch.tensor(tables, dtype=torch.int32),
                              max(q_lens), int(ctx.max()), 0.3, mask=spec)
    for b, (ql, n) in enumerate(seqs):
        keys = torch.zeros(n, HKV, D, dtype=torch.float64)
        vals = torch.zeros(n, HKV, D, dtype=torch.float64)
        present = torch.ones(n, dtype=torch.bool)
        for j in range(n):
            phys = tables[b][j // bs]
            if phys < 0:
                present[j] = False
            else:
                keys[j], vals[j] = k_cache[phys, j % bs], v_cache[phys, j % bs]
        for t in range(ql):
            i = n - ql + t
            allowed = torch.tensor([spec.allowed(torch.tensor(i), torch.tensor(j)).item()
                                    for j in range(n)]) & present
            want = dense_softmax64(q[int(cu[b]) + t], keys, vals, allowed, 0.3)
            torch.testing.assert_close(out[int(cu[b]) + t], want, atol=1e-10, rtol=1e-10)


def run_paged(spec, q, k, v, bs, chunk, cos, sin, evict=True):
    """Stream (N, H, D) raw q/k/v through a paged cache in chunks, evicting and re-rotating."""
    n_total = q.shape[0]
    kv = KVCache(1, 64, bs, HKV, D, torch.float32, "cpu")
    free, table, outs, peak, n = list(range(64)), [], [], 0, 0
    while n < n_total:
        t = min(chunk, n_total - n)
        while len(table) * bs < n + t:
            table.append(free.pop())
        pos = torch.arange(n, n + t) - rope_offset(table, n, bs)
        qr, kr = rope_ref(q[n:n + t], k[n:n + t], pos, cos, sin)
        slots = torch.tensor([table[p // bs] * bs + p % bs for p in range(n, n + t)])
        write_kv_ref(kr, v[n:n + t], kv.k[0], kv.v[0], slots)
        bt = torch.tensor([table], dtype=torch.int32)
        outs.append(paged_attention_ref(qr, kv.k[0], kv.v[0], torch.tensor([0, t], dtype=torch.int32),
                                        torch.tensor([n + t], dtype=torch.int32), bt, t, n + t,
                                        D ** -0.5, mask=spec))
        n += t
        peak = max(peak, sum(1 for b in table if b >= 0))
        if evict:
            plan = plan_eviction(spec, table, n, bs)
            for i in plan.freed_logical:
                free.append(table[i])
                table[i] = -1
            for delta, ids in plan.rerotate:
                rerotate_keys(kv, ids, delta, cos, sin)
    return torch.cat(outs), peak


def expected_streaming(spec, q, k, v, bs, chunk):
    """StreamingLLM by definition: positions inside the cache, computed from scratch per query."""
    n_total, outs = q.shape[0], []
    sink_end = -(-spec.sinks // bs) * bs                   # keys in sink blocks keep their position
    for c in range(0, n_total, chunk):
        # tokens evicted before this chunk: full blocks past the sink blocks no query >= c can see
        seen = spec.allowed(torch.arange(c, c + 10 * n_total)[:, None], torch.arange(c)[None, :]).any(0)
        evicted = sum(bs for b in range(sink_end // bs, c // bs) if not seen[b * bs:(b + 1) * bs].any())
        for i in range(c, min(c + chunk, n_total)):
            j = torch.arange(i + 1)
            kpos = torch.where(j < sink_end, j, j - evicted)
            qi = rotate64(q[i:i + 1], torch.tensor([i - evicted]))[0]
            allowed = spec.allowed(torch.tensor(i), j)
            outs.append(dense_softmax64(qi, rotate64(k[:i + 1], kpos), v[:i + 1].double(),
                                        allowed, D ** -0.5))
    return torch.stack(outs)


@settings(max_examples=12, deadline=None)
@given(text=st.sampled_from(["streaming:2,9", "streaming:4,12", "streaming:5,6", "local:10",
                             "local:3", "dense", "sparse:6,5"]),
       bs=st.sampled_from([2, 4, 8]), chunk=st.sampled_from([1, 3, 7]), seed=st.integers(0, 999))
def test_streaming_run_equals_definition_and_bounds_memory(text, bs, chunk, seed):
    spec = parse_pattern(text).spec
    g = torch.Generator().manual_seed(seed)
    n = 70
    q, k, v = (torch.randn(n, h, D, generator=g) for h in (HQ, HKV, HKV))
    cos, sin = rope_tables()
    got, peak = run_paged(spec, q, k, v, bs, chunk, cos, sin)
    want = expected_streaming(spec, q, k, v, bs, chunk)
    torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=2e-4)
    if parse_pattern(text).evicts:   # memory stays bounded by sinks + window + one chunk
        assert peak <= -(-spec.sinks // bs) + (spec.window + chunk) // bs + 2


def test_local_eviction_does_not_change_outputs():
    """Without sinks only relative positions matter, so evicting + re-rotating is invisible."""
    spec = MaskSpec(window=9)
    g = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(80, h, D, generator=g) for h in (HQ, HKV, HKV))
    cos, sin = rope_tables()
    with_evict, _ = run_paged(spec, q, k, v, 4, 3, cos, sin)
    without, _ = run_paged(spec, q, k, v, 4, 3, cos, sin, evict=False)
    torch.testing.assert_close(with_evict, without, atol=1e-4, rtol=1e-4)
