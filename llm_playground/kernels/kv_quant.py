"""The 8-bit KV cache format: codes plus one float16 scale per (token, KV head), in torch.

A quantised KV cache (`--kv-dtype int8 | fp8`) stores, per layer, K and V as codes
(NB, BS, Hkv, D) of int8 or float8_e4m3fn and scales (NB, BS, Hkv) float16:

    int8:  scale = max|x| / 127 over the head's D values, code = round(x / scale)
    fp8:   scale = max|x| / 448 (e4m3's largest finite), code = fp8(x / scale)
    value = code * scale

So a block costs 2 x layers x Hkv x (D + 2) bytes x block size instead of 2 x ... x 2 D: 1.94x
the blocks in the same budget at D = 64, 1.97x at D = 128. Scales are per token so that writing
a token never rescales the tokens already in its block (the write is one pass, no read-back).

This module: the quantiser and dequantiser every path shares (`quantize_kv`, `dequantize_kv`),
and `dequantized_view`: the blocks a batch's tables name, dequantised into a compact temporary
cache with remapped tables, which is how the Triton prefill kernel (kernels/flash_prefill.py,
unchanged) reads a quantised cache; the paged decode kernel (kernels/paged_decode.py) and the
KV write (kernels/kv_write.py) read and write the codes themselves. It does not allocate the
pool (model/network/kv_cache.py).
"""
from __future__ import annotations

import torch

KV_CODE_DTYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}
KV_QMAX = {torch.int8: 127.0, torch.float8_e4m3fn: 448.0}
SCALE_DTYPE = torch.float16
MIN_SCALE = 2.0 ** -24          # float16's smallest subnormal: an all-zero head stays zero


def quantize_kv(x: torch.Tensor, code_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., D) float -> (codes (..., D) code_dtype, scales (...) float16)."""
    xf = x.float()
    scale = (xf.abs().amax(-1) / KV_QMAX[code_dtype]).clamp(min=MIN_SCALE).to(SCALE_DTYPE)
    y = xf / scale.float()[..., None]
    if code_dtype == torch.int8:
        codes = torch.round(y).clamp(-127, 127).to(torch.int8)
    else:
        codes = y.clamp(-448.0, 448.0).to(code_dtype)
    return codes, scale


def dequantize_kv(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """codes (..., D), scales (...) -> values (..., D) in `dtype` (computed in float32)."""
    return (codes.float() * scales.float()[..., None]).to(dtype)


def dequantized_view(k_cache: torch.Tensor, v_cache: torch.Tensor, k_scale: torch.Tensor,
                     v_scale: torch.Tensor, block_tables: torch.Tensor, dtype: torch.dtype
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(K (B*W, BS, Hkv, D), V, tables (B, W)) in `dtype`: the B x W blocks `block_tables` names
    (B, W), dequantised, and the tables renumbered to them (-1 stays -1). No host sync."""
    B, W = block_tables.shape
    ids = block_tables.reshape(-1).long()                                   # (B*W,)
    safe = ids.clamp(min=0)
    k = dequantize_kv(k_cache.index_select(0, safe), k_scale.index_select(0, safe), dtype)
    v = dequantize_kv(v_cache.index_select(0, safe), v_scale.index_select(0, safe), dtype)
    order = torch.arange(B * W, device=ids.device, dtype=torch.int32).view(B, W)
    tables = torch.where(block_tables >= 0, order, torch.full_like(order, -1))
    return k, v, tables
