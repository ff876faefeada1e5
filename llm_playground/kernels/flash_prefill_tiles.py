"""The per-tile device functions of the FlashAttention prefill kernel (kernels/flash_prefill.py).

What it does: one key tile of the online softmax, as @triton.jit helpers inlined into
`_prefill_kernel`:
- `_attend_tile`: a tile of keys read from the paged cache through the block table (a cached
  prefix, or every key on the table path), with the optional key, causal and pattern masks;
- `_attend_packed`: a tile of the batch's *new* keys read from the packed K/V tensors (TMA
  descriptors on Hopper, pointers elsewhere), with the optional causal mask;
- `_softmax_update`: the running max / sum / accumulator update both share (exp2, folded scale,
  bf16 P for the PV product as FlashAttention does);
- `_exp2_poly`: 2^x as a degree-4 polynomial on the FMA units (relative error 6e-6). With
  POLY_EXP, half of each tile's exponentials take it instead of the special-function unit,
  which at head dim 64 issues as many exponentials per clock as the tensor cores consume (the
  trick of FlashAttention-4); bf16 only, its P is rounded to 4e-3 anyway.
What it does not do: launch anything, choose tiles, or know about batches (the kernel does).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _attend_tile(acc, m_i, l_i, q, q_pos, k_ptrs_base, v_ptrs_base, Table, ks, ctx,
                 stride_kb, stride_ks, stride_vb, stride_vs, qk_scale,
                 window, stride, sinks,
                 offs_d, BS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_N: tl.constexpr, CAUSAL_MASK: tl.constexpr, PATTERN: tl.constexpr,
                 DOT_F32: tl.constexpr, PRECISION: tl.constexpr, IDX64: tl.constexpr,
                 KEY_MASK: tl.constexpr, POLY_EXP: tl.constexpr = False):
    """One key tile [ks, ks + BLOCK_N): scores, optional mask, online-softmax update.

    KEY_MASK False: the caller guarantees every key of the tile is < ctx (the off-diagonal tiles
    of causal attention) and no table holds a hole (-1, a block freed by a sliding pattern), so
    loads and scores need no per-key mask. True: keys past ctx and holes are masked.
    """
    offs_n = ks + tl.arange(0, BLOCK_N)                                   # (BN,)
    if BS % BLOCK_N == 0:
        # The whole tile lies in one physical block: one table read, contiguous rows.
        blk = tl.load(Table + ks // BS)
        if IDX64:
            blk = blk.to(tl.int64)
        row = blk * stride_kb + ((ks % BS) + tl.arange(0, BLOCK_N)) * stride_ks
        vrow = blk * stride_vb + ((ks % BS) + tl.arange(0, BLOCK_N)) * stride_vs
        if KEY_MASK:
            key_ok = (offs_n < ctx) & ((offs_n * 0 + blk) >= 0)  # broadcast first (interpreter)
    else:
        if not KEY_MASK:
            blk = tl.load(Table + offs_n // BS)                               # (BN,)
        else:
            blk = tl.load(Table + offs_n // BS, mask=offs_n < ctx, other=-1)  # (BN,)
        if IDX64:
            blk = blk.to(tl.int64)
        row = blk * stride_kb + (offs_n % BS) * stride_ks
        vrow = blk * stride_vb + (offs_n % BS) * stride_vs
        if KEY_MASK:
            key_ok = (offs_n < ctx) & (blk >= 0)
    k_ptrs = k_ptrs_base + row[:, None] + offs_d[None, :]
    v_ptrs = v_ptrs_base + vrow[:, None] + offs_d[None, :]
    if not KEY_MASK and HEAD_DIM == BLOCK_D:
        k = tl.load(k_ptrs)                                                # (BN, BD)
        v = tl.load(v_ptrs)                                                # (BN, BD)
    elif not KEY_MASK:
        k = tl.load(k_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
        v = tl.load(v_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
    else:
        ld_ok = key_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
        k = tl.load(k_ptrs, mask=ld_ok, other=0.0)
        v = tl.load(v_ptrs, mask=ld_ok, other=0.0)
    if DOT_F32:  # triton's interpreter multiplies bf16 tiles wrongly: give it float32 tiles
        k = k.to(tl.float32)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION)                  # (BM, BN) raw scores
    if KEY_MASK:
        allowed = key_ok[None, :]
        if CAUSAL_MASK:
            allowed = allowed & (offs_n[None, :] <= q_pos[:, None])
            if PATTERN:
                dist = q_pos[:, None] - offs_n[None, :]
                # (q - k) % stride == 0 as q % stride == k % stride (k <= q here, causal): BM + BN
                # integer remainders per tile instead of BM x BN.
                st = tl.maximum(stride, 1)
                same_phase = (q_pos % st)[:, None] == (offs_n % st)[None, :]
                pat = (dist < window) | ((stride > 0) & same_phase)
                pat = pat | (offs_n[None, :] < sinks)
                allowed = allowed & pat
        s = tl.where(allowed, s, float("-inf"))
    return _softmax_update(acc, m_i, l_i, s, v, qk_scale, KEY_MASK, DOT_F32, PRECISION,
                           POLY_EXP)


@triton.jit
def _exp2_poly(x):
    """2^x for x <= 0 (softmax exponents) without the special-function unit: 2^floor(x) put into
    the exponent bits, 2^frac(x) from a least-squares degree-4 polynomial (max rel. error 6.2e-6).
    Below -126 it returns about 1e-38 instead of 0 (the smallest normal): nothing a sum sees."""
    x = tl.maximum(x, -126.0)
    xi = tl.floor(x)
    f = x - xi                                                             # [0, 1)
    p = 1.0 + f * (0.6930434793716014 + f * (0.24124980948504893 + f * (0.05235282711037054
                                                                       + f * 0.013341537108305157)))
    bits = p.to(tl.int32, bitcast=True) + (xi.to(tl.int32) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _exp2_tile(x, POLY_EXP: tl.constexpr):
    """exp2 of a (BM, BN) tile: all on the special-function unit, or (POLY_EXP) the odd columns
    through _exp2_poly so the two pipes share the work."""
    if POLY_EXP:
        BM: tl.constexpr = x.shape[0]
        BN: tl.constexpr = x.shape[1]
        even, odd = tl.split(tl.reshape(x, (BM, BN // 2, 2)))
        return tl.reshape(tl.join(tl.math.exp2(even), _exp2_poly(odd)), (BM, BN))
    return tl.math.exp2(x)


@triton.jit
def _softmax_update(acc, m_i, l_i, s, v, qk_scale, MASKED: tl.constexpr, DOT_F32: tl.constexpr,
                    PRECISION: tl.constexpr, POLY_EXP: tl.constexpr = False):
    """Online-softmax step for raw scores s (BM, BN) (-inf where masked) and values v (BN, BD)."""
    # qk_scale > 0, so max(s * scale) = max(s) * scale: one FMA per score below.
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)                       # (BM,)
    if not MASKED:
        m_sub = m_new
    else:  # a row may have seen no key yet: keep -inf - -inf from making NaNs
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = _exp2_tile(s * qk_scale - m_sub[:, None], POLY_EXP)                # (BM, BN)
    alpha = tl.math.exp2(m_i - m_sub)                                      # (BM,)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if DOT_F32:
        acc = tl.dot(p, v.to(tl.float32), acc, input_precision=PRECISION)
    else:
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)   # bf16 P, as FA does
    return acc, m_new, l_i


@triton.jit
def _attend_packed(acc, m_i, l_i, q, q_idx, KN, VN, kn_base, vn_base, row0, kv_col, js, q_len,
                   stride_knt, stride_vnt, qk_scale, offs_d,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                   MASK: tl.constexpr, TMA: tl.constexpr, DOT_F32: tl.constexpr,
                   PRECISION: tl.constexpr, POLY_EXP: tl.constexpr = False):
    """One tile [js, js + BLOCK_N) of the sequence's *new* keys, read from the packed K/V of this
    batch (rows row0 + j) instead of the cache: contiguous rows, no block table.

    MASK 0: every key of the tile is <= every query of the tile (no mask, no bounds).
    MASK 1: causal mask j <= i and j < q_len (rows past the sequence belong to the next one).
    MASK 2: only j < q_len (the last tile of full attention, benchmarks only).
    TMA: KN/VN are tensor descriptors over (T, Hkv * D) (Hopper's bulk copies); else pointers.
    """
    offs_j = js + tl.arange(0, BLOCK_N)                                   # (BN,) new-key index
    if TMA:
        k = KN.load([row0 + js, kv_col])                                   # (BN, D)
        v = VN.load([row0 + js, kv_col])                                   # (BN, D)
    else:
        rows = (row0 + offs_j).to(tl.int64)
        k_ptrs = kn_base + rows[:, None] * stride_knt + offs_d[None, :]
        v_ptrs = vn_base + rows[:, None] * stride_vnt + offs_d[None, :]
        if MASK != 0:
            ld_ok = (offs_j[:, None] < q_len) & (offs_d[None, :] < HEAD_DIM)
            k = tl.load(k_ptrs, mask=ld_ok, other=0.0)
            v = tl.load(v_ptrs, mask=ld_ok, other=0.0)
        elif HEAD_DIM == BLOCK_D:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        else:
            k = tl.load(k_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
            v = tl.load(v_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
    if DOT_F32:
        k = k.to(tl.float32)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION)                  # (BM, BN) raw scores
    if MASK == 1:
        allowed = (offs_j[None, :] <= q_idx[:, None]) & (offs_j[None, :] < q_len)
        s = tl.where(allowed, s, float("-inf"))
    elif MASK == 2:
        s = tl.where(offs_j[None, :] < q_len, s, float("-inf"))
    return _softmax_update(acc, m_i, l_i, s, v, qk_scale, MASK != 0, DOT_F32, PRECISION,
                           POLY_EXP)
