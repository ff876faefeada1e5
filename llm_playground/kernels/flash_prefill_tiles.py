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
def _attend_tile(state, q, q_pos, offs_d, cache, ks, ctx, qk_scale, pattern,
                 SHAPE: tl.constexpr, PAGING: tl.constexpr, MASKS: tl.constexpr,
                 MATH: tl.constexpr):
    """One key tile [ks, ks + BLOCK_N): scores, optional mask, online-softmax update.

    state: (acc, m_i, l_i), the running online-softmax state; returned updated.
    q (BM, BD), q_pos (BM,) logical query positions, offs_d = arange(0, BLOCK_D).
    cache: (k_base, v_base, table, stride_kb, stride_ks, stride_vb, stride_vs): this KV head's
    K/V cache bases, the sequence's block-table row, the block and slot strides of K and V.
    ctx: keys of the sequence (masked past it with KEY_MASK); qk_scale: scale * log2(e).
    pattern: (window, stride, sinks) of the MaskSpec, read only with PATTERN.
    Constexpr tuples (every element stays a compile-time constant):
    SHAPE (HEAD_DIM, BLOCK_D, BLOCK_N); PAGING (BS, IDX64): block size, 64-bit cache offsets;
    MASKS (KEY_MASK, CAUSAL_MASK, PATTERN); MATH (DOT_F32, PRECISION, POLY_EXP), as
    _softmax_update.

    KEY_MASK False: the caller guarantees every key of the tile is < ctx (the off-diagonal tiles
    of causal attention) and no table holds a hole (-1, a block freed by a sliding pattern), so
    loads and scores need no per-key mask. True: keys past ctx and holes are masked.
    """
    HEAD_DIM: tl.constexpr = SHAPE[0]
    BLOCK_D: tl.constexpr = SHAPE[1]
    BLOCK_N: tl.constexpr = SHAPE[2]
    BS: tl.constexpr = PAGING[0]
    IDX64: tl.constexpr = PAGING[1]
    KEY_MASK: tl.constexpr = MASKS[0]
    CAUSAL_MASK: tl.constexpr = MASKS[1]
    PATTERN: tl.constexpr = MASKS[2]
    DOT_F32: tl.constexpr = MATH[0]
    PRECISION: tl.constexpr = MATH[1]
    k_ptrs_base, v_ptrs_base, Table, stride_kb, stride_ks, stride_vb, stride_vs = cache
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
                window, stride, sinks = pattern
                dist = q_pos[:, None] - offs_n[None, :]
                # (q - k) % stride == 0 as q % stride == k % stride (k <= q here, causal): BM + BN
                # integer remainders per tile instead of BM x BN.
                st = tl.maximum(stride, 1)
                same_phase = (q_pos % st)[:, None] == (offs_n % st)[None, :]
                pat = (dist < window) | ((stride > 0) & same_phase)
                pat = pat | (offs_n[None, :] < sinks)
                allowed = allowed & pat
        s = tl.where(allowed, s, float("-inf"))
    return _softmax_update(state, s, v, qk_scale, KEY_MASK, MATH)


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
def _softmax_update(state, s, v, qk_scale, MASKED: tl.constexpr, MATH: tl.constexpr):
    """Online-softmax step for raw scores s (BM, BN) (-inf where masked) and values v (BN, BD).

    state: (acc, m_i, l_i), returned updated. MASKED: a row may still be all -inf.
    MATH: constexpr (DOT_F32, PRECISION, POLY_EXP): float32 tiles for the interpreter's dot,
    tl.dot's input precision, half the exponentials by polynomial (_exp2_tile).
    """
    acc, m_i, l_i = state
    DOT_F32: tl.constexpr = MATH[0]
    PRECISION: tl.constexpr = MATH[1]
    POLY_EXP: tl.constexpr = MATH[2]
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
def _attend_packed(state, q, q_idx, offs_d, packed, js, q_len, qk_scale,
                   SHAPE: tl.constexpr, MASK: tl.constexpr, TMA: tl.constexpr,
                   MATH: tl.constexpr):
    """One tile [js, js + BLOCK_N) of the sequence's *new* keys, read from the packed K/V of this
    batch (rows row0 + j) instead of the cache: contiguous rows, no block table.

    state: (acc, m_i, l_i), returned updated; q (BM, BD), q_idx (BM,) new-token indices of the
    queries, offs_d = arange(0, BLOCK_D); q_len: new tokens of the sequence.
    packed: (kn, vn, row0, kv_col, stride_knt, stride_vnt): with TMA, tensor descriptors over
    (T, Hkv * D) (Hopper's bulk copies) and kv_col this KV head's first column; else this KV
    head's base pointers and the token (row) strides; row0: the sequence's first row.
    Constexpr: SHAPE (HEAD_DIM, BLOCK_D, BLOCK_N); MATH (DOT_F32, PRECISION, POLY_EXP).
    MASK 0: every key of the tile is <= every query of the tile (no mask, no bounds).
    MASK 1: causal mask j <= i and j < q_len (rows past the sequence belong to the next one).
    MASK 2: only j < q_len (the last tile of full attention, benchmarks only).
    """
    HEAD_DIM: tl.constexpr = SHAPE[0]
    BLOCK_D: tl.constexpr = SHAPE[1]
    BLOCK_N: tl.constexpr = SHAPE[2]
    DOT_F32: tl.constexpr = MATH[0]
    PRECISION: tl.constexpr = MATH[1]
    kn, vn, row0, kv_col, stride_knt, stride_vnt = packed
    offs_j = js + tl.arange(0, BLOCK_N)                                   # (BN,) new-key index
    if TMA:
        k = kn.load([row0 + js, kv_col])                                   # (BN, D)
        v = vn.load([row0 + js, kv_col])                                   # (BN, D)
    else:
        rows = (row0 + offs_j).to(tl.int64)
        k_ptrs = kn + rows[:, None] * stride_knt + offs_d[None, :]
        v_ptrs = vn + rows[:, None] * stride_vnt + offs_d[None, :]
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
    return _softmax_update(state, s, v, qk_scale, MASK != 0, MATH)
