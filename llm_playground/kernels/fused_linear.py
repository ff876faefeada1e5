"""Skinny projections with their elementwise producer fused in (Triton), for decode steps.

What it does: at decode a step has few rows (one per sequence), so each projection is a
matrix-vector product bound by reading the weight, and at small models by kernel launches. Two
kernels fold the op that feeds a projection into its prologue, so the intermediate never goes
through memory and one launch disappears per fused pair:

- `rms_norm_linear(x, norm_weight, eps, residual, weight)`: (x + residual), RMSNorm, then
  `normed @ weight.T`; returns (y (T, N), the new residual (T, H)). Replaces kernels.rmsnorm +
  F.linear in front of the q|k|v and gate|up projections.
- `silu_mul_linear(gate_up, weight)`: silu(gate) * up, then `act @ weight.T`; replaces
  kernels.swiglu + F.linear for the down projection.

One program owns BLOCK_N output features: it loads those whole weight rows into registers once
(BLOCK_N x next_pow2(K), K <= MAX_K), then for each of the T <= MAX_ROWS activation rows
recomputes that row's statistics itself (a row is a few KB, the weight slice is the traffic) and
reduces in float32 on the CUDA cores: a GEMV, no tensor-core tile padded from one row to 16.
(A first version used tl.dot on 16-row tiles and a K loop: 7-34 us per call on the H100, 2x
slower than cuBLAS + the separate op.) Rounding follows the unfused ops exactly (sum in x's
dtype, normed rounded, weight * normed rounded; silu rounded, then the product rounded), so only
the order of the float32 sum differs from cuBLAS.

What it does not do: more than MAX_ROWS rows (prefill and large batches stay on cuBLAS, which is
faster there), rows longer than MAX_K (large models: their decode is bound by reading weights,
which cuBLAS does at ~86% of the bandwidth floor, not by launches), quantized weights, or the
output projection (nothing to fuse in front of it).
Measured (benchmarks/e2e_decode.py --profile, H100, 2026-11-23, SmolLM2 shapes, one replayed
decode step): norm + projection 2.7 us vs 1.65 + 3.5-4.0 us apart, SwiGLU + down 4.9 vs 1.1 + 3.5
us; 189 kernels and 579 us per step instead of 279 and 762; 1,186 vs 947 tok/s end to end.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_ROWS = 16          # decode buckets up to 16 sequences; cuBLAS wins beyond
MAX_K = 2048           # a program holds whole weight rows (BLOCK_N x next_pow2(K)) in registers
_TILE_ELEMS = 8192     # BLOCK_N * BLOCK_K: 64 float32 registers per thread at 4 warps


@triton.jit
def _rms_norm_linear_kernel(X, R, NW, W, Y, ResOut, T, K, N,
                            stride_x, stride_r, stride_w, stride_y, stride_ro, eps,
                            HAS_RES: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    ns = pid * BLOCK_N + tl.arange(0, BLOCK_N)                              # (BN,) features
    n_ok = ns < N
    ks = tl.arange(0, BLOCK_K)                                              # (BK,) whole rows
    k_ok = ks < K
    w = tl.load(W + ns[:, None].to(tl.int64) * stride_w + ks[None, :],
                mask=n_ok[:, None] & k_ok[None, :], other=0.0)              # (BN, BK), read once
    nw = tl.load(NW + ks, mask=k_ok, other=0.0).to(tl.float32)              # (BK,)
    for t in range(T):                                                      # the weight stays put
        x = tl.load(X + t * stride_x + ks, mask=k_ok, other=0.0)            # (BK,)
        if HAS_RES:
            r = tl.load(R + t * stride_r + ks, mask=k_ok, other=0.0)
            x = (x.to(tl.float32) + r.to(tl.float32)).to(X.dtype.element_ty)   # sum in x's dtype
            if pid == 0:
                tl.store(ResOut + t * stride_ro + ks, x, mask=k_ok)
        xf = x.to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(xf * xf, 0) / K + eps)
        normed = (xf * inv).to(X.dtype.element_ty).to(tl.float32)          # rounded, as rms_norm
        a = (nw * normed).to(X.dtype.element_ty).to(tl.float32)            # (BK,) the norm output
        y = tl.sum(w.to(tl.float32) * a[None, :], 1)                        # (BN,) float32 sum
        tl.store(Y + t * stride_y + ns, y.to(Y.dtype.element_ty), mask=n_ok)


@triton.jit
def _silu_mul_linear_kernel(GU, W, Y, T, K, N, stride_g, stride_w, stride_y,
                            BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    ns = pid * BLOCK_N + tl.arange(0, BLOCK_N)                              # (BN,)
    n_ok = ns < N
    ks = tl.arange(0, BLOCK_K)                                              # (BK,)
    k_ok = ks < K
    w = tl.load(W + ns[:, None].to(tl.int64) * stride_w + ks[None, :],
                mask=n_ok[:, None] & k_ok[None, :], other=0.0)              # (BN, BK)
    for t in range(T):
        g = tl.load(GU + t * stride_g + ks, mask=k_ok, other=0.0).to(tl.float32)
        u = tl.load(GU + t * stride_g + K + ks, mask=k_ok, other=0.0).to(tl.float32)
        act = (g / (1.0 + tl.exp(-g))).to(GU.dtype.element_ty).to(tl.float32)  # silu, rounded
        a = (act * u).to(GU.dtype.element_ty).to(tl.float32)               # (BK,) as swiglu
        y = tl.sum(w.to(tl.float32) * a[None, :], 1)                        # (BN,)
        tl.store(Y + t * stride_y + ns, y.to(Y.dtype.element_ty), mask=n_ok)


def _tiles(K: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_K): whole rows of K, and as many of them as fill the register tile."""
    block_k = triton.next_power_of_2(K)
    return max(1, _TILE_ELEMS // block_k), block_k


def _check(name: str, x: torch.Tensor, weight: torch.Tensor, K: int) -> None:
    if x.dim() != 2 or x.shape[0] > MAX_ROWS:
        raise ValueError(f"{name}: x must be (T <= {MAX_ROWS}, features), got {tuple(x.shape)}")
    if K > MAX_K:
        raise ValueError(f"{name}: at most {MAX_K} input features per row, got {K}")
    if weight.dim() != 2 or weight.shape[1] != K or weight.stride(1) != 1:
        raise ValueError(f"{name}: weight must be (N, {K}) with rows contiguous, "
                         f"got {tuple(weight.shape)} strides {weight.stride()}")
    if weight.dtype != x.dtype:
        raise ValueError(f"{name}: weight dtype {weight.dtype} differs from x dtype {x.dtype}")


def rms_norm_linear(
    x: torch.Tensor,                        # (T, H), T <= MAX_ROWS
    norm_weight: torch.Tensor,              # (H,)
    eps: float,
    residual: torch.Tensor | None,          # (T, H) or None
    weight: torch.Tensor,                   # (N, H)
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (rms_norm(x + residual) @ weight.T (T, N), x + residual (T, H); x itself if None)."""
    T, H = x.shape
    _check("rms_norm_linear", x, weight, H)
    x = x if x.stride(-1) == 1 else x.contiguous()
    N = weight.shape[0]
    y = torch.empty((T, N), dtype=x.dtype, device=x.device)                      # (T, N)
    res_out = torch.empty_like(x) if residual is not None else x                 # (T, H)
    r = residual.contiguous() if residual is not None else x
    if T:
        block_n, block_k = _tiles(H)
        _rms_norm_linear_kernel[(triton.cdiv(N, block_n),)](
            x, r, norm_weight, weight, y, res_out, T, H, N,
            x.stride(0), r.stride(0), weight.stride(0), y.stride(0), res_out.stride(0), eps,
            HAS_RES=residual is not None, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4)
    return y, res_out


def silu_mul_linear(
    gate_up: torch.Tensor,                  # (T, 2I), T <= MAX_ROWS
    weight: torch.Tensor,                   # (N, I)
) -> torch.Tensor:
    """-> (silu(gate) * up) @ weight.T (T, N), gate the first half of gate_up."""
    T, two_i = gate_up.shape
    inter = two_i // 2
    _check("silu_mul_linear", gate_up, weight, inter)
    gu = gate_up if gate_up.stride(-1) == 1 else gate_up.contiguous()
    N = weight.shape[0]
    y = torch.empty((T, N), dtype=gu.dtype, device=gu.device)                    # (T, N)
    if T:
        block_n, block_k = _tiles(inter)
        _silu_mul_linear_kernel[(triton.cdiv(N, block_n),)](
            gu, weight, y, T, inter, N, gu.stride(0), weight.stride(0), y.stride(0),
            BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4)
    return y
