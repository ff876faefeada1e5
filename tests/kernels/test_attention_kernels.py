"""Triton paged attention (prefill, decode, mixed) against the float64 torch reference.

CPU: the kernels under TRITON_INTERPRET=1 on small shapes (odd lengths, lengths off the block
size, GQA 1/3/8, head dims 64/128, empty and one-token sequences, cached prefixes, holes, every
MaskSpec pattern). GPU (@pytest.mark.gpu): the same checks at real shapes.
Outputs are poisoned with NaN before each run, so an element the kernel never writes fails.
"""
from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from kernel_cases import TOL, build_batch, needs_interpreter, poisoned_like, rel_err, upcast
from llm_playground.kernels.flash_prefill_tiles import _exp2_poly
from llm_playground.kernels.mask import MaskSpec
from llm_playground.kernels.reference import paged_attention_ref

LOCAL = MaskSpec(window=7)
ATROUS = MaskSpec(stride=5)
SPARSE = MaskSpec(window=6, stride=4)
STREAMING = MaskSpec(window=9, sinks=3)

# name: (q_lens, ctx_lens, Hq, Hkv, D, block_size, mask, num_decodes, holes)
CPU_CASES = {
    "prefill_odd_gqa1_d64": ([1, 7, 33], [1, 7, 33], 2, 2, 64, 16, MaskSpec(), 0, ()),
    "prefill_prefix_gqa3_d128": ([5, 20, 1], [37, 20, 9], 3, 1, 128, 16, MaskSpec(), 0, ()),
    "prefill_empty_gqa8_bs4": ([0, 13, 0, 6], [0, 13, 5, 23], 8, 1, 64, 4, MaskSpec(), 0, ()),
    "decode_gqa8_d128": ([1, 1, 1], [1, 17, 100], 8, 1, 128, 16, MaskSpec(), 3, ()),
    "decode_gqa3_long_split": ([1, 1], [300, 47], 6, 2, 64, 8, MaskSpec(), 2, ()),
    "mixed_decode_and_prefill": ([1, 1, 9, 4], [40, 3, 25, 4], 4, 2, 64, 16, MaskSpec(), 2, ()),
    "dense_holes": ([1, 6], [50, 40], 3, 1, 64, 8, MaskSpec(), 1, ((0, 2), (1, 1))),
    "local_prefill_decode": ([1, 26], [60, 40], 3, 1, 64, 4, LOCAL, 1, ()),
    "atrous_prefill_decode": ([1, 30], [44, 30], 3, 3, 64, 16, ATROUS, 1, ()),
    "sparse_prefill_decode": ([1, 21], [70, 33], 8, 1, 64, 8, SPARSE, 1, ()),
    "streaming_evicted": ([1, 12], [80, 45], 6, 2, 64, 8, STREAMING, 1, ((0, 2), (0, 5), (1, 2))),
}


def packed_new_kv(batch, q_lens, ctx_lens):
    """The new tokens' K and V gathered from the cache into packed (T, Hkv, D) tensors, as the
    model hands them to the prefill kernel: k contiguous, v a strided view of a wider buffer
    (the model's v is a slice of the fused q|k|v projection)."""
    bs = batch.k_cache.shape[1]
    slots = []
    for b, (ql, n) in enumerate(zip(q_lens, ctx_lens)):
        for pos in range(n - ql, n):
            slots.append(int(batch.block_tables[b, pos // bs]) * bs + pos % bs)
    flat_k = batch.k_cache.flatten(0, 1)                                   # (NB*BS, Hkv, D)
    flat_v = batch.v_cache.flatten(0, 1)
    idx = torch.tensor(slots, dtype=torch.long, device=flat_k.device)
    k_new = flat_k[idx].contiguous()                                       # (T, Hkv, D)
    T, hkv, d = k_new.shape
    wide = torch.full((T, 3 * hkv, d), float("nan"), dtype=flat_v.dtype, device=flat_v.device)
    wide[:, hkv:2 * hkv] = flat_v[idx]
    return k_new, wide[:, hkv:2 * hkv]                                     # v: strided view


def check_attention(case, dtype, device, num_splits=None, seed=0, holes_flag=None, packed=None):
    """holes_flag: what the kernel is told about holes (default: whether the case has any, so
    cases without holes run the prefill kernel's unmasked off-diagonal tiles).
    packed: None (every key through the block table), "ptr" or "tma" (the new tokens' K/V from
    packed tensors, loaded through pointers or tensor descriptors)."""
    from llm_playground.kernels import flash_prefill, triton_attention
    from llm_playground.kernels.paged_decode import paged_decode
    q_lens, ctx_lens, hq, hkv, d, bs, mask, num_decodes, holes = case
    batch = build_batch(q_lens, ctx_lens, hq, hkv, d, bs, dtype, device, holes, seed)
    scale = d ** -0.5
    out = poisoned_like(batch.q)
    if num_splits is not None:  # the decode kernel alone, split count forced
        paged_decode(batch.q, batch.k_cache, batch.v_cache, batch.context_lens, batch.block_tables,
                     len(q_lens), batch.max_context_len, scale, mask, out, num_splits=num_splits)
    else:
        flag = bool(holes) if holes_flag is None else holes_flag
        k_new = v_new = None
        if packed is not None:
            k_new, v_new = packed_new_kv(batch, q_lens, ctx_lens)
        # As the batch builder says it: a cached prefix before any prefill chunk?
        prefix = any(c > q for q, c in zip(q_lens[num_decodes:], ctx_lens[num_decodes:]))
        with flash_prefill.tma_enabled(packed == "tma"):
            triton_attention.paged_attention(*batch.args(), scale, mask, num_decodes, out,
                                             holes=flag, k_new=k_new, v_new=v_new, prefix=prefix)
    ref = paged_attention_ref(*upcast(batch).args(), scale, mask)
    err = rel_err(out, ref)
    assert err < TOL[dtype], f"relative error {err:.2e} (limit {TOL[dtype]:.0e})"


@needs_interpreter
@pytest.mark.parametrize("name", list(CPU_CASES))
def test_attention_fp32_interpreted(name):
    check_attention(CPU_CASES[name], torch.float32, "cpu")


@needs_interpreter
@pytest.mark.parametrize("name", ["prefill_prefix_gqa3_d128", "decode_gqa3_long_split",
                                  "streaming_evicted"])
def test_attention_bf16_interpreted(name):
    check_attention(CPU_CASES[name], torch.bfloat16, "cpu")


@needs_interpreter
@pytest.mark.parametrize("name", ["prefill_odd_gqa1_d64", "prefill_prefix_gqa3_d128"])
def test_attention_told_of_possible_holes_interpreted(name):
    """The conservative default (holes possible) masks every tile and gives the same result."""
    check_attention(CPU_CASES[name], torch.float32, "cpu", holes_flag=True)


PACKED_CASES = ["prefill_odd_gqa1_d64", "prefill_prefix_gqa3_d128", "prefill_empty_gqa8_bs4",
                "mixed_decode_and_prefill", "dense_holes"]


@needs_interpreter
@pytest.mark.parametrize("how", ["ptr", "tma"])
@pytest.mark.parametrize("name", PACKED_CASES)
def test_attention_packed_new_kv_interpreted(name, how):
    """The fast path: new tokens' keys from packed tensors, the cached prefix through the table."""
    check_attention(CPU_CASES[name], torch.float32, "cpu", packed=how)


@needs_interpreter
@pytest.mark.parametrize("how", ["ptr", "tma"])
def test_attention_packed_bf16_and_odd_head_dim_interpreted(how):
    check_attention(CPU_CASES["prefill_prefix_gqa3_d128"], torch.bfloat16, "cpu", packed=how)
    odd_dim = ([3, 18], [3, 40], 4, 2, 80, 16, MaskSpec(), 0, ())     # dim 80: pointer fallback
    check_attention(odd_dim, torch.float32, "cpu", packed=how)


@needs_interpreter
@pytest.mark.parametrize("name", ["prefill_odd_gqa1_d64", "prefill_prefix_gqa3_d128",
                                  "mixed_decode_and_prefill"])
def test_attention_packed_poly_exp_interpreted(name, monkeypatch):
    """Half the exponentials by polynomial (bf16 packed path) stays within the bf16 tolerance."""
    from llm_playground.kernels import flash_prefill
    monkeypatch.setattr(flash_prefill, "POLY_EXP_DIMS", (64, 128))
    check_attention(CPU_CASES[name], torch.bfloat16, "cpu", packed="tma")


@triton.jit
def _poly_kernel(X, Y, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(Y + offs, _exp2_poly(tl.load(X + offs)))


@needs_interpreter
def test_exp2_poly_accuracy_interpreted():
    """_exp2_poly against torch.exp2 over softmax exponents: relative error under 1e-5 down to
    -126, and a negligible (< 1.2e-38) value below, where exp2 underflows."""
    x = torch.cat([torch.linspace(-126.0, 0.0, 4093), torch.tensor([-126.5, -200.0, -1e4])])
    y = torch.full_like(x, float("nan"))
    _poly_kernel[(1,)](x, y, BLOCK=4096)
    want = torch.exp2(x.double())
    normal = x >= -126.0
    assert ((y.double()[normal] - want[normal]).abs() / want[normal]).max() < 1e-5
    assert (y[~normal] >= 0).all() and (y[~normal] < 1.2e-38).all()


@needs_interpreter
def test_packed_path_ignored_for_patterns_interpreted():
    """Sparse patterns read every key through the table even when packed K/V are given."""
    check_attention(CPU_CASES["local_prefill_decode"], torch.float32, "cpu", packed="tma")


@needs_interpreter
@pytest.mark.parametrize("splits", [1, 3, 7])
def test_decode_split_counts_agree_interpreted(splits):
    check_attention(CPU_CASES["decode_gqa3_long_split"], torch.float32, "cpu", num_splits=splits)
    streaming_decodes = ([1, 1], [80, 45], 6, 2, 64, 8, STREAMING, 2, ((0, 2), (0, 5), (1, 2)))
    check_attention(streaming_decodes, torch.float32, "cpu", num_splits=splits)


@needs_interpreter
def test_dispatch_routes_to_triton_when_forced():
    """The one switch: 'triton' sends CPU tensors to the Triton path (interpreted here)."""
    from llm_playground import kernels
    case = CPU_CASES["mixed_decode_and_prefill"]
    batch = build_batch(*case[:6], torch.float32, "cpu")
    kernels.set_backend("triton")
    try:
        out = kernels.paged_attention(*batch.args(), case[4] ** -0.5, case[6], case[7])
    finally:
        kernels.set_backend("auto")
    ref = paged_attention_ref(*upcast(batch).args(), case[4] ** -0.5, case[6])
    assert rel_err(out, ref) < 1e-3
    with pytest.raises(ValueError):
        kernels.set_backend("cuda")


# ---------------------------------------------------------------- GPU, real shapes
S_SHAPE = (9, 3, 64)
L_SHAPE = (32, 8, 128)
GPU_CASES = {
    "prefill_S_1k_odd": ([1000, 37, 1], [1000, 37, 1], *S_SHAPE, 16, MaskSpec(), 0, ()),
    "prefill_L_prefix": ([700, 129], [2200, 129], *L_SHAPE, 16, MaskSpec(), 0, ()),
    "prefill_L_bs256": ([1500], [1800], *L_SHAPE, 256, MaskSpec(), 0, ()),
    "decode_L_b64": ([1] * 64, [4096 - 37 * i for i in range(64)], *L_SHAPE, 16, MaskSpec(), 64, ()),
    "decode_L_b1_32k": ([1], [32768], *L_SHAPE, 16, MaskSpec(), 1, ()),
    "decode_S_b8": ([1] * 8, [513 * (i + 1) for i in range(8)], *S_SHAPE, 32, MaskSpec(), 8, ()),
    "mixed_L": ([1, 1, 1, 300, 77], [4000, 10, 1, 900, 77], *L_SHAPE, 16, MaskSpec(), 3, ()),
    "streaming_L": ([1, 500], [3000, 2000], *L_SHAPE, 16, MaskSpec(window=256, sinks=4), 1,
                    ((0, 40), (0, 41), (1, 30))),
    "local_S": ([1, 800], [2000, 1200], *S_SHAPE, 16, MaskSpec(window=128), 1, ()),
    "atrous_S": ([1, 600], [1000, 600], *S_SHAPE, 16, MaskSpec(stride=8), 1, ()),
    "sparse_L": ([1, 400], [1500, 400], *L_SHAPE, 16, MaskSpec(window=64, stride=16), 1, ()),
}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_attention_gpu(name, dtype):
    check_attention(GPU_CASES[name], dtype, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("how", ["ptr", "tma"])
@pytest.mark.parametrize("name", ["prefill_S_1k_odd", "prefill_L_prefix", "prefill_L_bs256",
                                  "mixed_L"])
def test_attention_packed_gpu(name, how):
    check_attention(GPU_CASES[name], torch.bfloat16, "cuda", packed=how)


@pytest.mark.gpu
@pytest.mark.parametrize("splits", [1, 5, 64])
def test_decode_splits_gpu(splits):
    check_attention(GPU_CASES["decode_L_b1_32k"], torch.bfloat16, "cuda", num_splits=splits)
