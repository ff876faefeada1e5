"""KV write (Triton): scatter this step's new K/V rows into their physical cache slots.

What it does: for each new token t with slot_mapping[t] >= 0, copies k[t] and v[t] (all KV heads,
Hkv * D elements each) into k_cache / v_cache at flat slot block_id * block_size + offset,
casting to the cache dtype. One program per token; -1 slots are skipped (padding tokens of a
captured CUDA graph, or tokens whose K/V need not be stored).

With k_scale / v_scale (an 8-bit cache, kernels/kv_quant.py) each (token, head) row is stored
as codes plus its float16 scale, max|x| / QMAX, computed in the same program (one pass).

What it does not do: RoPE. The model writes through kernels/rope_triton.py `rope_write_kv`
instead, which rotates q and k and writes k, v in one launch (the bytes it saves are few; the
launch it saves matters for small models, whose decode steps are launch-bound). This kernel stays
for callers whose K is already rotated. Same meaning as kernels.reference.write_kv_ref.
Measured (H100, 2026-11-23): 4-14 us vs 260-275 us for the reference, whose boolean indexing
syncs with the host (and so cannot be graph-captured).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _kv_write_kernel(K, V, KC, VC, Slots, stride_kt, stride_kh, stride_vt, stride_vh,
                     stride_cs, stride_ch, stride_vcs, stride_vch,
                     HKV: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr,
                     BLOCK_D: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(Slots + t).to(tl.int64)
    if slot < 0:
        return
    h = tl.arange(0, BLOCK_H)[:, None]                                # (BH, 1)
    d = tl.arange(0, BLOCK_D)[None, :]                                # (1, BD)
    ok = (h < HKV) & (d < D)
    k = tl.load(K + t * stride_kt + h * stride_kh + d, mask=ok)
    v = tl.load(V + t * stride_vt + h * stride_vh + d, mask=ok)
    tl.store(KC + slot * stride_cs + h * stride_ch + d, k.to(KC.dtype.element_ty), mask=ok)
    tl.store(VC + slot * stride_vcs + h * stride_vch + d, v.to(VC.dtype.element_ty), mask=ok)


@triton.jit
def _quant_row(X, C, S, t, slot, stride_xt, stride_xh, stride_cs, stride_ch, stride_ss,
               h, d, ok, HKV: tl.constexpr, BLOCK_H: tl.constexpr, QMAX: tl.constexpr,
               IS_INT: tl.constexpr):
    x = tl.load(X + t * stride_xt + h * stride_xh + d, mask=ok, other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(x), 1)                                       # (BH,)
    scale = tl.maximum(amax / QMAX, 5.960464477539063e-08).to(tl.float16)  # kv_quant.MIN_SCALE
    y = x / scale.to(tl.float32)[:, None]
    if IS_INT:
        y = tl.where(y >= 0, tl.floor(y + 0.5), tl.ceil(y - 0.5))      # round half away from 0
        y = tl.minimum(tl.maximum(y, -127.0), 127.0)
    else:
        y = tl.minimum(tl.maximum(y, -448.0), 448.0)
    tl.store(C + slot * stride_cs + h * stride_ch + d, y.to(C.dtype.element_ty), mask=ok)
    hs = tl.arange(0, BLOCK_H)
    tl.store(S + slot * stride_ss + hs, scale, mask=hs < HKV)


@triton.jit
def _kv_write_quant_kernel(K, V, KC, VC, KS, VS, Slots, stride_kt, stride_kh, stride_vt, stride_vh,
                           stride_cs, stride_ch, stride_vcs, stride_vch, stride_ss,
                           HKV: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr,
                           BLOCK_D: tl.constexpr, QMAX: tl.constexpr, IS_INT: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(Slots + t).to(tl.int64)
    if slot < 0:
        return
    h = tl.arange(0, BLOCK_H)[:, None]                                # (BH, 1)
    d = tl.arange(0, BLOCK_D)[None, :]                                # (1, BD)
    ok = (h < HKV) & (d < D)
    _quant_row(K, KC, KS, t, slot, stride_kt, stride_kh, stride_cs, stride_ch, stride_ss,
               h, d, ok, HKV, BLOCK_H, QMAX, IS_INT)
    _quant_row(V, VC, VS, t, slot, stride_vt, stride_vh, stride_vcs, stride_vch, stride_ss,
               h, d, ok, HKV, BLOCK_H, QMAX, IS_INT)


def write_kv(
    k: torch.Tensor,             # (T, Hkv, D)
    v: torch.Tensor,             # (T, Hkv, D)
    k_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    v_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    slot_mapping: torch.Tensor,  # (T,) int64, -1 = skip
    k_scale: torch.Tensor | None = None,   # (NB, BS, Hkv) float16: an 8-bit cache
    v_scale: torch.Tensor | None = None,
) -> None:
    """Write each token's k and v into its cache slot (slot_mapping, -1 = skip), in place."""
    T, Hkv, D = k.shape
    if T == 0:
        return
    if k_scale is not None:
        from llm_playground.kernels.kv_quant import KV_QMAX
        if k_cache.stride(0) != k_cache.stride(1) * k_cache.shape[1] or k_cache.stride(-1) != 1 \
                or k_scale.stride(1) != Hkv or k_scale.stride(0) != k_scale.stride(1) * k_scale.shape[1] \
                or v_scale.stride() != k_scale.stride() or v_cache.stride() != k_cache.stride():
            raise ValueError("write_kv: quantised caches and scales must be laid out back to back")
        k = k if k.stride(-1) == 1 else k.contiguous()
        v = v if v.stride(-1) == 1 else v.contiguous()
        _kv_write_quant_kernel[(T,)](
            k, v, k_cache, v_cache, k_scale, v_scale, slot_mapping, k.stride(0), k.stride(1),
            v.stride(0), v.stride(1), k_cache.stride(1), k_cache.stride(2), v_cache.stride(1),
            v_cache.stride(2), k_scale.stride(1), HKV=Hkv, D=D,
            BLOCK_H=triton.next_power_of_2(Hkv), BLOCK_D=triton.next_power_of_2(D),
            QMAX=KV_QMAX[k_cache.dtype], IS_INT=k_cache.dtype == torch.int8, num_warps=4)
        return
    if k.stride(-1) != 1 or v.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("write_kv needs the head dimension contiguous")
    if k_cache.stride(0) != k_cache.stride(1) * k_cache.shape[1] or \
            v_cache.stride(0) != v_cache.stride(1) * v_cache.shape[1]:
        raise ValueError("write_kv needs each cache's blocks laid out back to back (flat slots)")
    _kv_write_kernel[(T,)](
        k, v, k_cache, v_cache, slot_mapping, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(1), k_cache.stride(2), v_cache.stride(1), v_cache.stride(2),
        HKV=Hkv, D=D, BLOCK_H=triton.next_power_of_2(Hkv), BLOCK_D=triton.next_power_of_2(D),
        num_warps=4,
    )
