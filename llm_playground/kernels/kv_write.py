"""KV write (Triton): scatter this step's new K/V rows into their physical cache slots.

What it does: for each new token t with slot_mapping[t] >= 0, copies k[t] and v[t] (all KV heads,
Hkv * D elements each) into k_cache / v_cache at flat slot block_id * block_size + offset,
casting to the cache dtype. One program per token; -1 slots are skipped (padding tokens of a
captured CUDA graph, or tokens whose K/V need not be stored).

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


def write_kv(
    k: torch.Tensor,             # (T, Hkv, D)
    v: torch.Tensor,             # (T, Hkv, D)
    k_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    v_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    slot_mapping: torch.Tensor,  # (T,) int64, -1 = skip
) -> None:
    """Write each token's k and v into its cache slot (slot_mapping, -1 = skip), in place."""
    T, Hkv, D = k.shape
    if T == 0:
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
