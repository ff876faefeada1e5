"""Rotary position embedding (Triton), Hugging Face's rotate-half layout, for q and k at once.

One program per token rotates all query and key heads: cos/sin of the token's position are read
once, q and k once each, and the rotated copies written once (new tensors, like the reference).
Eager torch makes about ten passes (gather cos/sin, chunk, four products, two sums, cat, cast).
Same meaning as kernels.reference.rope_ref. Measured (benchmarks/fused_ops.py, H100,
2026-11-23, bf16, eager timing): 9-54x faster than the eager reference (8B, T=4096: 35 vs 438 us).
What it does not do: Llama-3 frequency scaling (the caller builds cos/sin tables with it), or
rotate in place.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rope_one(X, Y, t, stride_t, stride_h, c, s, NH: tl.constexpr, HALF: tl.constexpr,
              BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_HALF)[None, :]
    ok = (h < NH) & (d < HALF)
    base = t * stride_t + h * stride_h + d
    x1 = tl.load(X + base, mask=ok, other=0.0).to(tl.float32)
    x2 = tl.load(X + base + HALF, mask=ok, other=0.0).to(tl.float32)
    out_base = t * (NH * 2 * HALF) + h * (2 * HALF) + d               # Y is contiguous
    tl.store(Y + out_base, (x1 * c - x2 * s).to(Y.dtype.element_ty), mask=ok)
    tl.store(Y + out_base + HALF, (x2 * c + x1 * s).to(Y.dtype.element_ty), mask=ok)


@triton.jit
def _rope_kernel(Q, K, QO, KO, Pos, Cos, Sin, stride_qt, stride_qh, stride_kt, stride_kh,
                 stride_cos, HQ: tl.constexpr, HKV: tl.constexpr, HALF: tl.constexpr,
                 BLOCK_HQ: tl.constexpr, BLOCK_HKV: tl.constexpr, BLOCK_HALF: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(Pos + t)
    d = tl.arange(0, BLOCK_HALF)[None, :]
    c = tl.load(Cos + pos * stride_cos + d, mask=d < HALF, other=0.0)  # (1, BH) float32
    s = tl.load(Sin + pos * stride_cos + d, mask=d < HALF, other=0.0)
    _rope_one(Q, QO, t, stride_qt, stride_qh, c, s, HQ, HALF, BLOCK_HQ, BLOCK_HALF)
    _rope_one(K, KO, t, stride_kt, stride_kh, c, s, HKV, HALF, BLOCK_HKV, BLOCK_HALF)


def rope(
    q: torch.Tensor,          # (T, Hq, D)
    k: torch.Tensor,          # (T, Hkv, D)
    positions: torch.Tensor,  # (T,) int64
    cos: torch.Tensor,        # (max_pos, D/2) float32
    sin: torch.Tensor,        # (max_pos, D/2) float32
):
    T, Hq, D = q.shape
    Hkv = k.shape[1]
    if q.stride(-1) != 1 or k.stride(-1) != 1 or cos.stride(-1) != 1 or sin.stride() != cos.stride():
        raise ValueError("rope needs the head dimension contiguous and cos/sin of one layout")
    q_out = torch.empty((T, Hq, D), dtype=q.dtype, device=q.device)   # (T, Hq, D)
    k_out = torch.empty((T, Hkv, D), dtype=k.dtype, device=k.device)  # (T, Hkv, D)
    if T:
        half = D // 2
        _rope_kernel[(T,)](
            q, k, q_out, k_out, positions, cos, sin, q.stride(0), q.stride(1), k.stride(0),
            k.stride(1), cos.stride(0), HQ=Hq, HKV=Hkv, HALF=half,
            BLOCK_HQ=triton.next_power_of_2(Hq), BLOCK_HKV=triton.next_power_of_2(Hkv),
            BLOCK_HALF=triton.next_power_of_2(half), num_warps=4,
        )
    return q_out, k_out
