"""Weight-only quantised matmuls (Triton): y = x @ W.T with W a PackedWeight (4 or 8 bit).

The weight stays packed in memory (kernels/quant_layout.py has the layout); each kernel loads
codes, scales and mins and never writes a dequantised weight anywhere. Activations are bfloat16
(float16 and float32 work too); accumulation is float32, the output has x's dtype.

- `_qgemv_kernel` (one activation row: batch-1 decode): a program owns BLOCK_N output rows and a
  slice of K (split-K, so a small N still fills the GPU; the slices' float32 partials are summed
  after). Its K tile of BLOCK_K columns is GPT groups of SUBK columns (several small groups per
  tile, GPT = BLOCK_K / G, or one tile inside a large group). Per (row, group) it sums x * code
  on the CUDA cores, then applies the group's scale and min once:
      y[n] = sum_g  s[n, g] * (x_g . q_g[n])  +  m[n, g] * sum(x_g)      (Q4_1 style)
      y[n] = sum_g  s[n, g] * (x_g . q_g[n]  -  8 sum(x_g))              (Q4_0 style)
      y[n] = sum_g  s[n, g] * (x_g . q_g[n])                             (int8)
- `_qgemm_kernel` (two rows or more: batched decode, prefill): BLOCK_M x BLOCK_N tiles, K tiles of
  BLOCK_K columns inside one group (BLOCK_K divides G); the codes become a bfloat16 tile exactly
  (0..15, -127..127), tl.dot on tensor cores, then the same scale/min epilogue per K tile. Also
  split-K when the tiles are too few for the GPU.

`quant_linear(x, pw)` picks the kernel and the split. Same meaning as
kernels/quant_layout.quant_linear_ref (the oracle). Block sizes are first guesses chosen for the
H100's bandwidth-bound decode (128 bytes of codes per row per tile), not autotuned.
What it does not do: quantise activations, fuse the norm or SwiGLU in front (kernels/fused_linear.py
does that for plain weights only), or run K-quants.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from llm_playground.kernels.quant_layout import PackedWeight

# First guesses, not autotuned; the environment overrides them for a sweep on the GPU
# (QUANT_GEMV_BLOCK_N=16 QUANT_GEMV_TILE_BYTES=256 QUANT_WARPS=8 python benchmarks/quant_decode.py).
GEMV_BLOCK_N = int(os.environ.get("QUANT_GEMV_BLOCK_N", 32))
GEMV_TILE_BYTES = int(os.environ.get("QUANT_GEMV_TILE_BYTES", 128))  # codes per row per K tile
GEMM_MAX_BLOCK_K = int(os.environ.get("QUANT_GEMM_BLOCK_K", 64))
GEMM_BLOCK_N = int(os.environ.get("QUANT_GEMM_BLOCK_N", 64))
NUM_WARPS = int(os.environ.get("QUANT_WARPS", 4))
SPLIT_WAVES = int(os.environ.get("QUANT_SPLIT_WAVES", 2))   # split-K aims at this many programs per SM
# How the 4-bit GEMV reads its codes: 0 bytes (x in even/odd halves), 1 int32 words of 8 codes
# with the nibbles unrolled, 2 int32 words with the nibbles as a tensor axis. 0 until the GPU
# sweep (.gl-style QUANT_GEMV4=1|2 runs of benchmarks/quant_decode.py) says otherwise.
GEMV4 = int(os.environ.get("QUANT_GEMV4", 0))
_SM_COUNT: dict[int, int] = {}

# triton 3.9's interpreter computes bf16 x bf16 tl.dot wrongly (values ~1e10 on 16x16 tiles,
# checked 2026-12-07); under it the GEMM's dot runs in float32 (the codes are exact either way).
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _qgemv_kernel(X, C, S, Mn, P, N, K, stride_c, stride_s, tiles_per_split, n_tiles,
                  BITS: tl.constexpr, HAS_MIN: tl.constexpr, G: tl.constexpr,
                  GPT: tl.constexpr, SUBK: tl.constexpr, BLOCK_N: tl.constexpr,
                  W4: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)                           # (BN,)
    n_ok = ns < N
    gi = tl.arange(0, GPT)                                                 # (GPT,) groups in tile
    BLOCK_K: tl.constexpr = GPT * SUBK
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    t0 = pid_k * tiles_per_split
    for t in range(t0, tl.minimum(t0 + tiles_per_split, n_tiles)):
        k0 = t * BLOCK_K
        g = k0 // G + gi                                                   # (GPT,) group index
        s = tl.load(S + ns[:, None] * stride_s + g[None, :], mask=n_ok[:, None],
                    other=0.0).to(tl.float32)                              # (BN, GPT)
        if BITS == 4:
            if W4 == 0:              # bytes, x split into even and odd columns
                HALF: tl.constexpr = SUBK // 2
                js = tl.arange(0, HALF)                                        # (SUBK/2,) bytes
                kk = k0 + gi[:, None] * SUBK + 2 * js[None, :]                 # (GPT, SUBK/2) even k
                b = tl.load(C + ns[:, None, None].to(tl.int64) * stride_c + (kk // 2)[None, :, :],
                            mask=n_ok[:, None, None], other=0)                 # (BN, GPT, SUBK/2) u8
                lo = (b & 0xF).to(tl.float32)
                hi = (b >> 4).to(tl.float32)
                xe = tl.load(X + kk, mask=kk < K, other=0.0).to(tl.float32)    # (GPT, SUBK/2)
                xo = tl.load(X + kk + 1, mask=kk + 1 < K, other=0.0).to(tl.float32)
                d = tl.sum(lo * xe[None, :, :] + hi * xo[None, :, :], axis=2)  # (BN, GPT)
                xs = tl.sum(xe + xo, axis=1)                                   # (GPT,)
            else:                    # int32 words of 8 codes (C: the codes viewed as int32)
                SW: tl.constexpr = SUBK // 8                                   # words per group slice
                ws = k0 // 8 + gi[:, None] * SW + tl.arange(0, SW)[None, :]    # (GPT, SW) word index
                w = tl.load(C + ns[:, None, None].to(tl.int64) * stride_c + ws[None, :, :],
                            mask=n_ok[:, None, None], other=0)                 # (BN, GPT, SW) int32
                if W4 == 1:          # the 8 nibbles unrolled, x read with a stride of 8
                    acc3 = tl.zeros((BLOCK_N, GPT, SW), dtype=tl.float32)
                    xs2 = tl.zeros((GPT, SW), dtype=tl.float32)
                    for i in tl.static_range(8):                               # nibble i: k = 8 word + i
                        q = (w >> (4 * i)) & 0xF
                        # exact code -> float32 without a conversion instruction: the bits of 2^23 + q
                        qf = (q | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
                        kx = ws * 8 + i
                        xi = tl.load(X + kx, mask=kx < K, other=0.0).to(tl.float32)   # (GPT, SW)
                        acc3 += qf * xi[None, :, :]
                        xs2 += xi
                    d = tl.sum(acc3, axis=2)                                   # (BN, GPT)
                    xs = tl.sum(xs2, axis=1)                                   # (GPT,)
                else:                # the nibbles as a last axis, x one contiguous tile
                    sh = 4 * tl.arange(0, 8)
                    q = (w[:, :, :, None] >> sh[None, None, None, :]) & 0xF    # (BN, GPT, SW, 8)
                    qf = (q | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
                    ks = k0 + tl.arange(0, BLOCK_K)
                    x = tl.load(X + ks, mask=ks < K, other=0.0).to(tl.float32)    # (BK,)
                    x4 = tl.reshape(x, (GPT, SW, 8))
                    d = tl.sum(tl.sum(qf * x4[None, :, :, :], axis=3), axis=2)    # (BN, GPT)
                    xs = tl.sum(tl.sum(x4, axis=2), axis=1)                       # (GPT,)
            if HAS_MIN:
                m = tl.load(Mn + ns[:, None] * stride_s + g[None, :], mask=n_ok[:, None],
                            other=0.0).to(tl.float32)
                acc += tl.sum(d * s + m * xs[None, :], axis=1)
            else:
                acc += tl.sum(s * (d - 8.0 * xs[None, :]), axis=1)
        else:
            ks = tl.arange(0, SUBK)
            kk = k0 + gi[:, None] * SUBK + ks[None, :]                     # (GPT, SUBK)
            c = tl.load(C + ns[:, None, None].to(tl.int64) * stride_c + kk[None, :, :],
                        mask=n_ok[:, None, None], other=0).to(tl.float32)  # (BN, GPT, SUBK)
            x = tl.load(X + kk, mask=kk < K, other=0.0).to(tl.float32)     # (GPT, SUBK)
            d = tl.sum(c * x[None, :, :], axis=2)                          # (BN, GPT)
            acc += tl.sum(d * s, axis=1)
    tl.store(P + pid_k * N + ns, acc, mask=n_ok)


@triton.jit
def _qgemm_kernel(X, C, S, Mn, P, M, N, K, stride_xm, stride_c, stride_s, tiles_per_split, n_tiles,
                  BITS: tl.constexpr, HAS_MIN: tl.constexpr, G: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  DOT_F32: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    ms = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)                           # (BM,)
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)                           # (BN,)
    m_ok = ms < M
    n_ok = ns < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    t0 = pid_k * tiles_per_split
    for t in range(t0, tl.minimum(t0 + tiles_per_split, n_tiles)):
        k0 = t * BLOCK_K
        ks = k0 + tl.arange(0, BLOCK_K)                                    # (BK,)
        x = tl.load(X + ms[:, None].to(tl.int64) * stride_xm + ks[None, :],
                    mask=m_ok[:, None] & (ks[None, :] < K), other=0.0)     # (BM, BK)
        g = k0 // G
        s = tl.load(S + ns * stride_s + g, mask=n_ok, other=0.0).to(tl.float32)   # (BN,)
        if BITS == 4:
            js = k0 // 2 + tl.arange(0, BLOCK_K // 2)
            b = tl.load(C + ns[:, None].to(tl.int64) * stride_c + js[None, :],
                        mask=n_ok[:, None], other=0)                       # (BN, BK/2) uint8
            lo = (b & 0xF).to(tl.float32).to(x.dtype)
            hi = (b >> 4).to(tl.float32).to(x.dtype)
            w = tl.reshape(tl.join(lo, hi), (BLOCK_N, BLOCK_K))            # (BN, BK) interleaved
        else:
            w = tl.load(C + ns[:, None].to(tl.int64) * stride_c + ks[None, :],
                        mask=n_ok[:, None], other=0).to(tl.float32).to(x.dtype)   # (BN, BK)
        if DOT_F32:    # float32 activations, or the interpreter (its bf16 tl.dot is wrong)
            d = tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), input_precision="ieee")
        else:
            d = tl.dot(x, tl.trans(w))                                     # (BM, BN) x . q
        if BITS == 4:
            xs = tl.sum(x.to(tl.float32), axis=1)                          # (BM,)
            if HAS_MIN:
                m = tl.load(Mn + ns * stride_s + g, mask=n_ok, other=0.0).to(tl.float32)
                acc += d * s[None, :] + xs[:, None] * m[None, :]
            else:
                acc += (d - 8.0 * xs[:, None]) * s[None, :]
        else:
            acc += d * s[None, :]
    tl.store(P + pid_k * M * N + ms[:, None] * N + ns[None, :], acc,
             mask=m_ok[:, None] & n_ok[None, :])


def _pow2_divisor(n: int, cap: int) -> int:
    """Largest power of two dividing n, at most cap."""
    return min(n & -n, cap)


def _code_words(codes: torch.Tensor) -> torch.Tensor:
    """4-bit codes (N, Kp/2) uint8 as (N, Kp/8) int32 words: word j holds k = 8j..8j+7, code i
    in bits 4i..4i+3 (little-endian bytes, low nibble first). A view when the rows are aligned
    (Kp is a multiple of 16), else a copy."""
    try:
        return codes.view(torch.int32)
    except RuntimeError:
        return codes.contiguous().view(torch.int32)


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4                        # the interpreter: a small split still gets exercised
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


def _split(tiles: int, programs: int, device: torch.device) -> tuple[int, int]:
    """(splits, tiles per split): enough programs for two waves of the GPU, slices of >= 2 tiles."""
    want = max(1, -(-SPLIT_WAVES * _sm_count(device) // max(programs, 1)))
    splits = max(1, min(want, tiles // 2, 16))
    per = -(-tiles // splits)
    return -(-tiles // per), per


def gemv_tiles(pw: PackedWeight) -> tuple[int, int]:
    """(GPT, SUBK) for the GEMV: a K tile of GPT groups of SUBK columns (or SUBK inside a group)."""
    G = pw.group_size
    tile_k = GEMV_TILE_BYTES * (2 if pw.bits == 4 else 1)
    if G < tile_k and G & (G - 1) == 0:                 # small power-of-two groups: several a tile
        return _pow2_divisor(pw.padded_in_features // G, tile_k // G), G   # GPT | groups per row
    return 1, _pow2_divisor(G, tile_k)


def launch_plan(M: int, pw: PackedWeight, device: torch.device) -> dict:
    """How quant_linear runs M rows: kernel ("gemv" for one row, else "gemm"), tile sizes, the
    K tiles and the split-K (splits, tiles per split). Tests read it to cover both paths."""
    N, kp = pw.out_features, pw.padded_in_features
    if M == 1:
        gpt, subk = gemv_tiles(pw)
        tiles = kp // (gpt * subk)
        grid = (triton.cdiv(N, GEMV_BLOCK_N),)
        plan = dict(kernel="gemv", gpt=gpt, subk=subk)
    else:
        block_m = 16 if M <= 16 else 32 if M <= 32 else 64
        block_k = _pow2_divisor(pw.group_size, GEMM_MAX_BLOCK_K)
        tiles = kp // block_k
        grid = (triton.cdiv(M, block_m), triton.cdiv(N, GEMM_BLOCK_N))
        plan = dict(kernel="gemm", block_m=block_m, block_k=block_k)
    splits, per = _split(tiles, grid[0] * (grid[1] if len(grid) > 1 else 1), device)
    return dict(plan, grid=grid, tiles=tiles, splits=splits, per=per)


def quant_linear(x: torch.Tensor, pw: PackedWeight) -> torch.Tensor:
    """x (T, K) -> x @ W.T (T, N) in x's dtype, W packed (kernels/quant_layout.py)."""
    if x.dim() != 2 or x.shape[1] != pw.in_features:
        raise ValueError(f"quant_linear: x must be (T, {pw.in_features}), got {tuple(x.shape)}")
    x = x if x.stride(-1) == 1 else x.contiguous()
    M, K = x.shape
    N = pw.out_features
    mins = pw.mins if pw.mins is not None else pw.scales             # unread when HAS_MIN is off
    if M == 0:
        return torch.empty((0, N), dtype=x.dtype, device=x.device)
    p = launch_plan(M, pw, x.device)
    splits = p["splits"]
    if p["kernel"] == "gemv":
        part = torch.empty((splits, N), dtype=torch.float32, device=x.device)   # (S, N)
        w4 = GEMV4 if pw.bits == 4 else 0
        codes = _code_words(pw.codes) if w4 else pw.codes
        _qgemv_kernel[(*p["grid"], splits)](
            x, codes, pw.scales, mins, part, N, K, codes.stride(0), pw.scales.stride(0),
            p["per"], p["tiles"], BITS=pw.bits, HAS_MIN=pw.mins is not None, G=pw.group_size,
            GPT=p["gpt"], SUBK=p["subk"], BLOCK_N=GEMV_BLOCK_N, W4=w4, num_warps=NUM_WARPS)
        y = part[0] if splits == 1 else part.sum(0)
        return y.to(x.dtype).view(1, N)
    part = torch.empty((splits, M, N), dtype=torch.float32, device=x.device)     # (S, M, N)
    _qgemm_kernel[(*p["grid"], splits)](
        x, pw.codes, pw.scales, mins, part, M, N, K, x.stride(0), pw.codes.stride(0),
        pw.scales.stride(0), p["per"], p["tiles"], BITS=pw.bits, HAS_MIN=pw.mins is not None,
        G=pw.group_size, BLOCK_M=p["block_m"], BLOCK_N=GEMM_BLOCK_N, BLOCK_K=p["block_k"],
        DOT_F32=x.dtype == torch.float32 or _INTERPRET, num_warps=NUM_WARPS)
    y = part[0] if splits == 1 else part.sum(0)
    return y.to(x.dtype)
