"""Fused residual add + RMSNorm (Triton), Llama's way: float32 statistics, cast, then weight.

What it does: per row, x + residual (stored back as the new residual stream, in x's dtype), then
normed = weight * (xf * rsqrt(mean(xf^2) + eps)).to(dtype): one read of x and residual, one write
of each output, instead of the 5-6 passes eager torch makes. Without residual, only the norm.
Same meaning as kernels.reference.rms_norm_ref.

Measured (benchmarks/fused_ops.py, H100, 2026-11-23, bf16, eager timing): 1.9-6.6x faster than
eager torch at T = 1..4096 (8B: 49 vs 93 us at T=1, 56 vs 319 us at T=4096). Kept.
What it does not do: rows longer than 65,536 elements (one program holds a row).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rmsnorm_kernel(X, R, W, Out, ResOut, stride_x, stride_r, stride_o, stride_ro, eps, H,
                    HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    ok = offs < H
    # Arithmetic in float32, rounded to the storage dtype exactly where eager torch rounds.
    xf = tl.load(X + row * stride_x + offs, mask=ok, other=0.0).to(tl.float32)
    if HAS_RES:
        r = tl.load(R + row * stride_r + offs, mask=ok, other=0.0).to(tl.float32)
        x = (xf + r).to(X.dtype.element_ty)                           # the sum in x's dtype
        tl.store(ResOut + row * stride_ro + offs, x, mask=ok)
        xf = x.to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(xf * xf, 0) / H + eps)
    normed = (xf * inv).to(X.dtype.element_ty).to(tl.float32)
    w = tl.load(W + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(Out + row * stride_o + offs, (w * normed).to(Out.dtype.element_ty), mask=ok)


def rms_norm(
    x: torch.Tensor,                        # (T, H)
    weight: torch.Tensor,                   # (H,)
    eps: float,
    residual: torch.Tensor | None = None,   # (T, H)
):
    """RMSNorm of x; with residual, of x + residual, returning (out, x + residual)."""
    H = x.shape[-1]
    x2 = x.reshape(-1, H)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out_dtype = torch.promote_types(weight.dtype, x.dtype)
    out = torch.empty(x2.shape, dtype=out_dtype, device=x.device)     # (T, H)
    res_out = torch.empty_like(x2) if residual is not None else out
    r2 = residual.reshape(-1, H).contiguous() if residual is not None else x2
    if x2.shape[0]:
        block = triton.next_power_of_2(H)
        _rmsnorm_kernel[(x2.shape[0],)](
            x2, r2, weight, out, res_out, x2.stride(0), r2.stride(0), out.stride(0),
            res_out.stride(0), eps, H, HAS_RES=residual is not None, BLOCK=block,
            num_warps=min(16, max(1, block // 256)),
        )
    out = out.reshape(x.shape)
    if residual is None:
        return out
    return out, res_out.reshape(x.shape)
