"""FlashAttention forward for prefill over the paged KV cache (Triton).

What it does: for each sequence of a packed, variable-length batch (cu_seqlens_q), every new
query token attends causally to all of that sequence's keys -- an already-cached prefix plus the
new tokens, whose K/V were written into the cache before this call -- read through the block
table. One program computes one tile of BLOCK_M query tokens for one query head:

- online softmax: running row max m and row sum l, the accumulator rescaled by exp2(m_old - m_new)
  whenever the max grows; the 1/l normalisation happens once, in the epilogue;
- exp2 with log2(e) folded into the softmax scale (qk_scale = scale * log2(e));
- GQA without repeating K/V: query head h reads KV head h // (Hq / Hkv);
- causal work split in two loops: key tiles wholly left of the query tile's first position run
  without any mask (off-diagonal), the tiles that touch the diagonal run with the causal mask;
- holes (-1 in the block table, blocks freed by a sliding pattern) are masked per key (tl.where
  to -inf) only when the caller says tables may hold them (`holes`, from
  AttentionBatch.has_holes; always for sparse patterns); dense batches without holes skip it;
- the packed path (dense masks, `k_new`/`v_new` given): the new tokens' keys and values are read
  from the batch's packed K/V tensors (row = token index in the batch, contiguous; TMA tensor
  descriptors on Hopper, pointer loads elsewhere and for head dims that are not a power of two),
  and only the cached prefix [0, ctx - q_len) through the block table; `prefix=False` (no
  sequence has one) compiles that loop out. This is the path of every prompt;
- MaskSpec patterns (window / stride / sinks): whole key tiles that no query of the tile may see
  are never loaded (local and StreamingLLM only visit the sink tiles and the window band; atrous
  visits every tile since a stride below the tile width leaves no tile empty), and the token-level
  formula of kernels/mask.py masks inside the visited tiles.

The per-tile device functions (table tile, packed tile, softmax update) are in
kernels/flash_prefill_tiles.py; this module holds the kernel's loops and the launcher.

What it does not do: write K/V (kernels/kv_write.py), handle decode-only batches fast (that is
kernels/paged_decode.py), or backward passes. Tile configuration: chosen on an H100 by
benchmarks/prefill_attention.py, the tables and the pick in kernels/prefill_configs.py.
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch
import triton
import triton.language as tl

from llm_playground.kernels.flash_prefill_tiles import _attend_packed, _attend_tile
from llm_playground.kernels.mask import DENSE, MaskSpec
from llm_playground.kernels.prefill_configs import choose_config

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:   # triton < 3.4: the packed path loads through pointers
    TensorDescriptor = None
_TMA_ENABLED = os.environ.get("PREFILL_TMA", "1") != "0"   # benchmarks compare with it off

LOG2E = 1.4426950408889634

# Head dims whose packed bf16 path computes half the exponentials by polynomial
# (flash_prefill_tiles._exp2_poly); chosen by benchmarks/prefill_attention.py --poly-exp.
POLY_EXP_DIMS: tuple[int, ...] = ()


# seq_offset (the number of decodes before the prefill sequences) changes from step to step:
# without do_not_specialize, triton compiles a variant for 1, for multiples of 16 and for the rest.
@triton.jit(do_not_specialize=["seq_offset"])
def _prefill_kernel(
    Q, K, V, Out, CuSeqQ, CtxLens, Tables, KN, VN,
    stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    stride_ot, stride_oh, stride_tb, stride_knt, stride_knh, stride_vnt, stride_vnh,
    qk_scale, seq_offset, window, stride, sinks,
    GROUP: tl.constexpr, BS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PATTERN: tl.constexpr, WINDOW_ONLY: tl.constexpr,
    CAUSAL: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr, IDX64: tl.constexpr,
    HOLES: tl.constexpr, PACKED: tl.constexpr, TMA: tl.constexpr, PREFIX: tl.constexpr,
    POLY_EXP: tl.constexpr = False,
):
    """One (query head, query tile, sequence) program: online softmax over the sequence's keys,
    in the loops the module docstring describes, through the tile helpers of
    flash_prefill_tiles.py; writes the normalised (BLOCK_M, HEAD_DIM) output tile."""
    h = tl.program_id(0)
    b = tl.program_id(2) + seq_offset
    q_start = tl.load(CuSeqQ + b)
    q_len = tl.load(CuSeqQ + b + 1) - q_start
    num_m_tiles = tl.cdiv(q_len, BLOCK_M)
    m_tile = num_m_tiles - 1 - tl.program_id(1)      # heaviest (last) tiles launch first
    if m_tile < 0:
        return
    ctx = tl.load(CtxLens + b)
    prefix = ctx - q_len                              # logical position of the first new token
    offs_m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)                      # (BM,) new-token index
    offs_d = tl.arange(0, BLOCK_D)
    q_pos = prefix + offs_m                                                # (BM,) logical positions
    m_ok = offs_m < q_len
    q = tl.load(Q + (q_start + offs_m).to(tl.int64)[:, None] * stride_qt + h * stride_qh
                + offs_d[None, :], mask=m_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    kvh = h // GROUP
    k_base = K + kvh * stride_kh
    v_base = V + kvh * stride_vh
    table = Tables + b.to(tl.int64) * stride_tb
    q_lo = prefix + m_tile * BLOCK_M                  # first query position of the tile
    q_end = tl.minimum(q_lo + BLOCK_M, ctx)           # one past the last valid query position
    # Argument groups of the tile helpers (flash_prefill_tiles.py): the paged cache of this KV
    # head, the mask pattern, and compile-time tuples of the tile shape, paging and math.
    cache = (k_base, v_base, table, stride_kb, stride_ks, stride_vb, stride_vs)
    pattern = (window, stride, sinks)
    SHAPE: tl.constexpr = (HEAD_DIM, BLOCK_D, BLOCK_N)
    PAGING: tl.constexpr = (BS, IDX64)
    TABLE_MATH: tl.constexpr = (DOT_F32, PRECISION, False)   # the table path: exp2 on the SFU

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)

    if PACKED:
        # Fast path (dense masks): the cached prefix [0, prefix) through the block table, then
        # the new tokens' keys straight from the packed K/V of this batch (row q_start + j).
        if PREFIX:  # compiled out when the caller says no sequence has a cached prefix
            even_end = (prefix // BLOCK_N) * BLOCK_N
            for ks in range(0, even_end, BLOCK_N):
                acc, m_i, l_i = _attend_tile((acc, m_i, l_i), q, q_pos, offs_d, cache, ks, prefix,
                                             qk_scale, pattern, SHAPE, PAGING,
                                             (HOLES, False, False), TABLE_MATH)
            for ks in range(even_end, prefix, BLOCK_N):
                acc, m_i, l_i = _attend_tile((acc, m_i, l_i), q, q_pos, offs_d, cache, ks, prefix,
                                             qk_scale, pattern, SHAPE, PAGING,
                                             (True, False, False), TABLE_MATH)
        if TMA:
            kn_base = KN                              # descriptors carry their base
            vn_base = VN
        else:
            kn_base = KN + kvh * stride_knh
            vn_base = VN + kvh * stride_vnh
        kv_col = kvh * HEAD_DIM
        packed_kv = (kn_base, vn_base, q_start, kv_col, stride_knt, stride_vnt)
        MATH: tl.constexpr = (DOT_F32, PRECISION, POLY_EXP)
        m_lo = m_tile * BLOCK_M                       # first new-token index of the tile
        if CAUSAL:
            full_end = ((m_lo + 1) // BLOCK_N) * BLOCK_N
            diag_end = tl.minimum(m_lo + BLOCK_M, q_len)
        else:
            full_end = (q_len // BLOCK_N) * BLOCK_N
            diag_end = q_len
        for js in range(0, full_end, BLOCK_N):
            acc, m_i, l_i = _attend_packed((acc, m_i, l_i), q, offs_m, offs_d, packed_kv, js,
                                           q_len, qk_scale, SHAPE, 0, TMA, MATH)
        for js in range(full_end, diag_end, BLOCK_N):
            acc, m_i, l_i = _attend_packed((acc, m_i, l_i), q, offs_m, offs_d, packed_kv, js,
                                           q_len, qk_scale, SHAPE, 1 if CAUSAL else 2, TMA, MATH)
    elif not CAUSAL:
        # Full (bidirectional) attention: only for benchmarks against non-causal SDPA.
        even_end = (ctx // BLOCK_N) * BLOCK_N
        for ks in range(0, even_end, BLOCK_N):
            acc, m_i, l_i = _attend_tile((acc, m_i, l_i), q, q_pos, offs_d, cache, ks, ctx,
                                         qk_scale, pattern, SHAPE, PAGING, (HOLES, False, False),
                                         TABLE_MATH)
        for ks in range(even_end, ctx, BLOCK_N):
            acc, m_i, l_i = _attend_tile((acc, m_i, l_i), q, q_pos, offs_d, cache, ks, ctx,
                                         qk_scale, pattern, SHAPE, PAGING, (True, False, False),
                                         TABLE_MATH)
    elif not PATTERN:
        # Off-diagonal tiles: every key <= every query of the tile, no mask at all.
        full_end = ((q_lo + 1) // BLOCK_N) * BLOCK_N
        for ks in range(0, full_end, BLOCK_N):
            acc, m_i, l_i = _attend_tile((acc, m_i, l_i), q, q_pos, offs_d, cache, ks, ctx,
                                         qk_scale, pattern, SHAPE, PAGING, (HOLES, False, False),
                                         TABLE_MATH)
        # Diagonal tiles: causal mask.
        for ks in range(full_end, q_end, BLOCK_N):
            acc, m_i, l_i = _attend_tile((acc, m_i, l_i), q, q_pos, offs_d, cache, ks, ctx,
                                         qk_scale, pattern, SHAPE, PAGING, (True, True, False),
                                         TABLE_MATH)
    else:
        # Sparse pattern: the sink tiles, then the band of tiles some query of the tile may see.
        sink_end = tl.minimum(tl.cdiv(sinks, BLOCK_N) * BLOCK_N, q_end)
        band_lo = sink_end
        if WINDOW_ONLY:
            band_lo = tl.maximum(sink_end, (tl.maximum(q_lo - window + 1, 0) // BLOCK_N) * BLOCK_N)
        for ks in range(0, sink_end, BLOCK_N):
            acc, m_i, l_i = _attend_tile((acc, m_i, l_i), q, q_pos, offs_d, cache, ks, ctx,
                                         qk_scale, pattern, SHAPE, PAGING, (True, True, True),
                                         TABLE_MATH)
        for ks in range(band_lo, q_end, BLOCK_N):
            acc, m_i, l_i = _attend_tile((acc, m_i, l_i), q, q_pos, offs_d, cache, ks, ctx,
                                         qk_scale, pattern, SHAPE, PAGING, (True, True, True),
                                         TABLE_MATH)

    out = acc / l_i[:, None]                          # epilogue: the one 1/l normalisation
    tl.store(Out + (q_start + offs_m).to(tl.int64)[:, None] * stride_ot + h * stride_oh
             + offs_d[None, :], out.to(Out.dtype.element_ty),
             mask=m_ok[:, None] & (offs_d[None, :] < HEAD_DIM))


def _interpreting() -> bool:
    return triton.knobs.runtime.interpret if hasattr(triton, "knobs") else False


def _check_packed(k_new: torch.Tensor, v_new: torch.Tensor, T: int, Hkv: int, D: int) -> None:
    for name, t in (("k_new", k_new), ("v_new", v_new)):
        if t.dim() != 3 or tuple(t.shape) != (T, Hkv, D) or t.stride(-1) != 1:
            raise ValueError(f"flash_prefill: {name} must be ({T}, {Hkv}, {D}) with the head "
                             f"dimension contiguous, got {tuple(t.shape)} strides {t.stride()}")


def _tma_ok(k_new: torch.Tensor, v_new: torch.Tensor, D: int) -> bool:
    """Tensor descriptors (Hopper's TMA, or the interpreter's emulation) for the packed K/V:
    needs a power-of-two head dim (a tile must not spill into the next head), heads laid out
    back to back within a row, and 16-byte aligned rows and base."""
    if TensorDescriptor is None or D != triton.next_power_of_2(D) or not _TMA_ENABLED:
        return False
    if not _interpreting() and (not k_new.is_cuda or _cc_major(k_new.device.index) < 9):
        return False
    for t in (k_new, v_new):
        if t.stride(1) != D or (t.stride(0) * t.element_size()) % 16 or t.data_ptr() % 16:
            return False
    return True


@functools.lru_cache(maxsize=None)
def _cc_major(index: int | None) -> int:
    """Compute capability major of a CUDA device, asked once (this runs per layer per step)."""
    return torch.cuda.get_device_capability(index)[0]


@contextlib.contextmanager
def tma_enabled(flag: bool):
    """Within the block the packed path uses TMA descriptors (flag True, where the GPU and the
    layout allow) or pointer loads (False); tests and benchmarks compare the two."""
    global _TMA_ENABLED
    old, _TMA_ENABLED = _TMA_ENABLED, flag
    try:
        yield
    finally:
        _TMA_ENABLED = old


def _descriptor(t: torch.Tensor, block_rows: int, D: int):
    """A 2-D descriptor over (T, Hkv * D) with row stride t.stride(0): tile [block_rows, D]."""
    T, Hkv, _ = t.shape
    return TensorDescriptor(t, [T, Hkv * D], [t.stride(0), 1], [block_rows, D])


def flash_prefill(
    q: torch.Tensor,             # (T, Hq, D)
    k_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    v_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    cu_seqlens_q: torch.Tensor,  # (B+1,) int32
    context_lens: torch.Tensor,  # (B,) int32
    block_tables: torch.Tensor,  # (B, max_blocks) int32
    max_q_len: int,
    scale: float,
    mask: MaskSpec = DENSE,
    out: torch.Tensor | None = None,  # (T, Hq, D)
    first_seq: int = 0,          # sequences before this one are skipped (decodes, done elsewhere)
    config: tuple[int, int, int, int] | None = None,  # (BLOCK_M, BLOCK_N, warps, stages)
    causal: bool = True,         # False: every new token sees every key (benchmarks only)
    holes: bool = True,          # False: the caller knows no table has a -1 inside its context
    k_new: torch.Tensor | None = None,  # (T, Hkv, D) the new tokens' keys (as written to the cache)
    v_new: torch.Tensor | None = None,  # (T, Hkv, D) their values; with k_new: the packed path
    prefix: bool = True,         # packed path: False = no sequence has cached tokens (faster)
    poly_exp: bool | None = None,  # packed bf16 path: half the exp2 by polynomial; None = table
) -> torch.Tensor:
    """Prefill attention of sequences first_seq.. over their paged keys into `out` (T, Hq, D)."""
    T, Hq, D = q.shape
    NB, BS, Hkv, _ = k_cache.shape
    if out is None:
        out = torch.empty_like(q)
    num_seqs = context_lens.shape[0] - first_seq
    if num_seqs <= 0 or max_q_len <= 0 or T == 0:
        return out
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1 or out.stride(-1) != 1:
        raise ValueError("flash_prefill needs the head dimension contiguous in q, caches and out")
    pattern = not mask.is_dense
    packed = k_new is not None and v_new is not None and not pattern
    if packed:
        _check_packed(k_new, v_new, T, Hkv, D)
    if config is None:          # kernels/prefill_configs.py: the swept tables
        config = choose_config(D, causal, packed, max_q_len, q.element_size(), _interpreting())
    block_m, block_n, warps, stages = config
    if poly_exp is None:
        poly_exp = D in POLY_EXP_DIMS
    poly_exp = poly_exp and packed and q.dtype == torch.bfloat16
    use_tma = packed and _tma_ok(k_new, v_new, D)
    if use_tma:
        kn = _descriptor(k_new, block_n, D)
        vn = _descriptor(v_new, block_n, D)
    else:
        kn, vn = (k_new, v_new) if packed else (k_cache, v_cache)   # unused when not packed
    grid = (Hq, triton.cdiv(max_q_len, block_m), num_seqs)
    _prefill_kernel[grid](
        q, k_cache, v_cache, out, cu_seqlens_q, context_lens, block_tables, kn, vn,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        out.stride(0), out.stride(1), block_tables.stride(0),
        k_new.stride(0) if packed else 0, k_new.stride(1) if packed else 0,
        v_new.stride(0) if packed else 0, v_new.stride(1) if packed else 0,
        scale * LOG2E, first_seq, mask.window, mask.stride, mask.sinks,
        GROUP=Hq // Hkv, BS=BS, HEAD_DIM=D, BLOCK_D=triton.next_power_of_2(D),
        BLOCK_M=block_m, BLOCK_N=block_n, PATTERN=pattern,
        WINDOW_ONLY=pattern and mask.window > 0 and mask.stride == 0, CAUSAL=causal,
        DOT_F32=_interpreting() and q.dtype != torch.float32,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # fp32 stays fp32
        IDX64=max(k_cache.numel(), v_cache.numel()) >= 2**31,  # 32-bit offsets save registers
        HOLES=holes or pattern, PACKED=packed, TMA=use_tma, PREFIX=prefix, POLY_EXP=poly_exp,
        num_warps=warps, num_stages=stages,
    )
    return out


def prefill_flops(q_lens: list[int], ctx_lens: list[int], num_heads: int, head_dim: int,
                  causal: bool = True) -> float:
    """Matmul FLOPs of attention (4 * q * k * d per head), counting only visible pairs if causal."""
    total = 0.0
    for q_len, n in zip(q_lens, ctx_lens):
        if causal:
            prefix = n - q_len
            pairs = q_len * prefix + q_len * (q_len + 1) / 2
        else:
            pairs = q_len * n
        total += 4.0 * pairs * head_dim * num_heads
    return total

