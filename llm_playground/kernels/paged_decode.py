"""Paged decode attention (Triton): a few query tokens per sequence over its paged K/V.

What it does: sequences 0..B-1 each bring QN new query tokens (QN = 1 for plain decoding; a few
for speculative decoding later), packed as tokens b*QN .. b*QN+QN-1. One program handles one
sequence, one KV head and one split of the key range:

- all query heads of the KV group (and all QN tokens) are rows of one (BLOCK_H, D) query tile, so
  each K/V tile is read from memory once for the whole group (GQA without repeating K/V);
- K/V rows are gathered through the block table (one table read per tile when the block size is
  a multiple of the tile width), holes (-1) are skipped;
- split-K (flash-decoding): with few sequences x KV heads to fill the GPU, the key range is cut
  into `num_splits` pieces processed in parallel; each writes its partial output and its
  log-sum-exp, and a small reduction kernel merges them. `choose_num_splits` is the heuristic:
  aim for about SPLIT_TARGET_WAVES programs per multiprocessor, never below MIN_SPLIT_TOKENS
  keys per split. One split writes the output directly (no reduction launch);
- MaskSpec patterns: with a window (local, StreamingLLM) only the sink tiles and the last
  window of keys are read; atrous reads every tile and masks.

Grid and split sizes depend only on host ints (batch size, max_context_len), so a decode step
can be captured in a CUDA graph when the caller fixes max_context_len for the capture.
What it does not do: prefill chunks (kernels/flash_prefill.py), write K/V (kernels/kv_write.py).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from llm_playground.kernels.mask import DENSE, MaskSpec

LOG2E = 1.4426950408889634

# head_dim -> (BLOCK_N, num_warps, num_stages), from the sweep in benchmarks/paged_decode.py on an
# H100 (2026-11-23; the config with the best worst case over batch 64 / 4k and batch 1 / 32k).
# Measured (second run, CUDA-graph timing): 2.80 TB/s at batch 64 / 4k / block 16 (0.91x
# contiguous SDPA), spread 3.0% over block sizes 16..256; batch 1 / 32k 2.23 TB/s with the
# heuristic's 64 splits (0.84x SDPA), spread 4.6%. benchmarks/results/paged_decode-h100.json
DECODE_CONFIGS = {
    64: (64, 8, 3),
    128: (64, 8, 3),
}
FP32_DECODE_CONFIG = (32, 4, 2)   # float32 exactness runs, not the fast path
_INTERPRET_CONFIG = (16, 4, 1)
SPLIT_TARGET_WAVES = 4      # programs per multiprocessor the split heuristic aims for
MIN_SPLIT_TOKENS = 256      # fewer keys per split than this costs more in the reduction than it gains
MAX_SPLITS = 64


@triton.jit
def _decode_kernel(
    Q, K, V, Out, PartO, PartLse, CtxLens, Tables, KS, VS,
    stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    stride_sb, stride_ss,
    stride_ot, stride_oh, stride_tb, stride_pt, stride_ph, stride_ps, stride_lt, stride_lh,
    qk_scale, tokens_per_split, window, stride, sinks,
    GROUP: tl.constexpr, QN: tl.constexpr, BLOCK_H: tl.constexpr, BS: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    PATTERN: tl.constexpr, WINDOW_ONLY: tl.constexpr, SPLIT: tl.constexpr, DOT_F32: tl.constexpr,
    PRECISION: tl.constexpr, IDX64: tl.constexpr, KV_QUANT: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    ctx = tl.load(CtxLens + b)
    rows = tl.arange(0, BLOCK_H)                       # row = token * GROUP + head-in-group
    row_ok = rows < GROUP * QN
    tok = b * QN + rows // GROUP                       # (BH,) packed token index
    head = kvh * GROUP + rows % GROUP                  # (BH,) query head
    q_pos = ctx - QN + rows // GROUP                   # (BH,) logical position of each query
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d[None, :] < HEAD_DIM
    q = tl.load(Q + tok.to(tl.int64)[:, None] * stride_qt + head[:, None] * stride_qh
                + offs_d[None, :], mask=row_ok[:, None] & d_ok, other=0.0)   # (BH, BD)
    if DOT_F32:  # triton's interpreter multiplies bf16 tiles wrongly: give it float32 tiles
        q = q.to(tl.float32)

    # Key range of this split. Window-only patterns read the sinks (split 0) plus the band.
    lo = 0
    if WINDOW_ONLY:
        lo = tl.maximum(ctx - QN - window + 1, 0)
        lo = (lo // BLOCK_N) * BLOCK_N
    start = lo + split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, ctx)
    sink_end = 0
    if WINDOW_ONLY:
        if split == 0:
            sink_end = tl.minimum(sinks, lo)

    m_i = tl.full((BLOCK_H,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_H,), tl.float32)
    acc = tl.zeros((BLOCK_H, BLOCK_D), tl.float32)
    k_base = K + kvh * stride_kh
    v_base = V + kvh * stride_vh
    table = Tables + b.to(tl.int64) * stride_tb
    for part in tl.static_range(2):
        if part == 0:
            r0 = 0
            r1 = sink_end
        else:
            r0 = start
            r1 = end
        for ks in range(r0, r1, BLOCK_N):
            offs_n = ks + tl.arange(0, BLOCK_N)                            # (BN,)
            n_ok = offs_n < r1
            if BS % BLOCK_N == 0:
                blk = tl.load(table + ks // BS)
                slot = (ks % BS) + tl.arange(0, BLOCK_N)
                key_ok = n_ok & ((offs_n * 0 + blk) >= 0)
            else:
                blk = tl.load(table + offs_n // BS, mask=n_ok, other=-1)
                slot = offs_n % BS
                key_ok = n_ok & (blk >= 0)
            if IDX64:
                blk = blk.to(tl.int64)
            krow = blk * stride_kb + slot * stride_ks                             # (BN,)
            vrow = blk * stride_vb + slot * stride_vs
            k = tl.load(k_base + krow[:, None] + offs_d[None, :],
                        mask=key_ok[:, None] & d_ok, other=0.0)                   # (BN, BD)
            v = tl.load(v_base + vrow[:, None] + offs_d[None, :],
                        mask=key_ok[:, None] & d_ok, other=0.0)                   # (BN, BD)
            if KV_QUANT:   # 8-bit codes, one float16 scale per (token, KV head)
                srow = blk * stride_sb + slot * stride_ss + kvh                   # (BN,)
                ksc = tl.load(KS + srow, mask=key_ok, other=0.0).to(tl.float32)
                vsc = tl.load(VS + srow, mask=key_ok, other=0.0).to(tl.float32)
                k = (k.to(tl.float32) * ksc[:, None]).to(Q.dtype.element_ty)
                v = (v.to(tl.float32) * vsc[:, None]).to(Q.dtype.element_ty)
            if DOT_F32:
                k = k.to(tl.float32)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale    # (BH, BN)
            allowed = key_ok[None, :] & (offs_n[None, :] <= q_pos[:, None])
            if PATTERN:
                dist = q_pos[:, None] - offs_n[None, :]
                st = tl.maximum(stride, 1)   # (q - k) % st == 0 as equal remainders (k <= q)
                same_phase = (q_pos % st)[:, None] == (offs_n % st)[None, :]
                pat = (dist < window) | ((stride > 0) & same_phase)
                allowed = allowed & (pat | (offs_n[None, :] < sinks))
            s = tl.where(allowed, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(s - m_safe[:, None])
            alpha = tl.math.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            p = p.to(v.dtype)
            if DOT_F32:
                p = p.to(tl.float32)
                v = v.to(tl.float32)
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PRECISION)
            m_i = m_new

    if SPLIT:
        # Partial result: normalised output and log2-sum-exp (-inf for an empty split).
        l_safe = tl.where(l_i == 0.0, 1.0, l_i)
        lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.math.log2(l_safe))
        po = PartO + tok.to(tl.int64)[:, None] * stride_pt + head[:, None] * stride_ph \
            + split * stride_ps + offs_d[None, :]
        tl.store(po, acc / l_safe[:, None], mask=row_ok[:, None] & d_ok)
        tl.store(PartLse + tok.to(tl.int64) * stride_lt + head * stride_lh + split, lse,
                 mask=row_ok)
    else:
        # A sequence with no keys (a padding row of a captured graph) gets zeros, not 0/0.
        l_safe = tl.where(l_i == 0.0, 1.0, l_i)
        o = Out + tok.to(tl.int64)[:, None] * stride_ot + head[:, None] * stride_oh + offs_d[None, :]
        tl.store(o, (acc / l_safe[:, None]).to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok)


@triton.jit
def _reduce_kernel(PartO, PartLse, Out, num_splits,
                   stride_pt, stride_ph, stride_ps, stride_lt, stride_lh, stride_ot, stride_oh,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr):
    """Merge the splits of one (token, head): weights 2^(lse_s - max lse)."""
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = offs_s < num_splits
    lse = tl.load(PartLse + t * stride_lt + h * stride_lh + offs_s, mask=s_ok,
                  other=float("-inf"))                                   # (BS,)
    m = tl.max(lse, 0)
    w = tl.where(s_ok, tl.math.exp2(lse - m), 0.0)
    po = tl.load(PartO + t * stride_pt + h * stride_ph + offs_s[:, None] * stride_ps
                 + offs_d[None, :], mask=s_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    o = tl.sum(po * w[:, None], 0) / tl.sum(w, 0)                         # (BD,)
    tl.store(Out + t * stride_ot + h * stride_oh + offs_d, o.to(Out.dtype.element_ty),
             mask=offs_d < HEAD_DIM)


def _interpreting() -> bool:
    return triton.knobs.runtime.interpret if hasattr(triton, "knobs") else False


@functools.lru_cache(maxsize=None)
def _sms_of(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    return _sms_of(device.index if device.index is not None else torch.cuda.current_device())


def key_span(max_context_len: int, mask: MaskSpec, query_per_seq: int) -> int:
    """Keys one sequence reads at most: the window band for window-only patterns, else all."""
    if mask.window and not mask.stride:
        return min(max_context_len, mask.window + query_per_seq - 1)
    return max_context_len


def choose_num_splits(num_seqs: int, num_kv_heads: int, span: int, num_sms: int) -> int:
    """Split the key range only when sequences x KV heads leave the GPU under-filled."""
    programs = num_seqs * num_kv_heads
    want = triton.cdiv(SPLIT_TARGET_WAVES * num_sms, max(programs, 1))
    by_len = max(1, span // MIN_SPLIT_TOKENS)
    return int(max(1, min(want, by_len, MAX_SPLITS)))


def paged_decode(
    q: torch.Tensor,             # (B*QN, Hq, D) the first B*QN tokens are read
    k_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    v_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    context_lens: torch.Tensor,  # (>=B,) int32
    block_tables: torch.Tensor,  # (>=B, max_blocks) int32
    num_seqs: int,
    max_context_len: int,
    scale: float,
    mask: MaskSpec = DENSE,
    out: torch.Tensor | None = None,   # (>=B*QN, Hq, D)
    query_per_seq: int = 1,
    num_splits: int | None = None,
    config: tuple[int, int, int] | None = None,  # (BLOCK_N, num_warps, num_stages)
    k_scale: torch.Tensor | None = None,   # (NB, BS, Hkv) float16: the caches hold 8-bit codes
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode attention of sequences 0..num_seqs-1 (query_per_seq tokens each) into `out`.
    With k_scale / v_scale the caches are int8 / fp8 codes (kernels/kv_quant.py), dequantised
    as they are loaded: half the bytes read per key."""
    _, Hq, D = q.shape
    _, BS, Hkv, _ = k_cache.shape
    if out is None:
        out = torch.empty_like(q)
    if num_seqs <= 0 or max_context_len <= 0:
        return out
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1 or out.stride(-1) != 1:
        raise ValueError("paged_decode needs the head dimension contiguous in q, caches and out")
    if config is None:
        if _interpreting():
            config = _INTERPRET_CONFIG
        elif q.element_size() > 2:    # float32 tiles: twice the shared memory, fewer stages
            config = FP32_DECODE_CONFIG
        else:
            config = DECODE_CONFIGS.get(D, DECODE_CONFIGS[128])
    block_n, warps, stages = config
    group = Hq // Hkv
    span = key_span(max_context_len, mask, query_per_seq) + block_n  # + one tile of alignment
    if num_splits is None:
        num_splits = choose_num_splits(num_seqs, Hkv, span, _num_sms(q.device))
    tokens_per_split = triton.cdiv(triton.cdiv(span, num_splits), block_n) * block_n
    num_splits = triton.cdiv(span, tokens_per_split)
    split = num_splits > 1
    T = num_seqs * query_per_seq
    if split:
        part_o = torch.empty((T, Hq, num_splits, D), dtype=torch.float32, device=q.device)
        part_lse = torch.empty((T, Hq, num_splits), dtype=torch.float32, device=q.device)
    else:
        part_o = part_lse = out  # unused
    pattern = not mask.is_dense
    block_d = max(16, triton.next_power_of_2(D))     # tl.dot needs K >= 16: small heads are padded (masked by d_ok)
    quant = k_scale is not None
    if quant and (k_scale.stride() != v_scale.stride() or k_scale.stride(2) != 1):
        raise ValueError("paged_decode: k_scale and v_scale must be (NB, BS, Hkv) alike, heads contiguous")
    ks, vs = (k_scale, v_scale) if quant else (out, out)   # unread without KV_QUANT
    _decode_kernel[(num_seqs, Hkv, num_splits)](
        q, k_cache, v_cache, out, part_o, part_lse, context_lens, block_tables, ks, vs,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        k_scale.stride(0) if quant else 0, k_scale.stride(1) if quant else 0,
        out.stride(0), out.stride(1),
        block_tables.stride(0),
        part_o.stride(0) if split else 0, part_o.stride(1) if split else 0,
        part_o.stride(2) if split else 0, part_lse.stride(0) if split else 0,
        part_lse.stride(1) if split else 0,
        scale * LOG2E, tokens_per_split, mask.window, mask.stride, mask.sinks,
        GROUP=group, QN=query_per_seq, BLOCK_H=max(16, triton.next_power_of_2(group * query_per_seq)),
        BS=BS, HEAD_DIM=D, BLOCK_D=block_d, BLOCK_N=block_n, PATTERN=pattern,
        WINDOW_ONLY=pattern and mask.window > 0 and mask.stride == 0, SPLIT=split,
        DOT_F32=_interpreting() and q.dtype != torch.float32,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # fp32 stays fp32
        IDX64=max(k_cache.numel(), v_cache.numel()) >= 2**31,  # 32-bit offsets save registers
        KV_QUANT=quant, num_warps=warps, num_stages=stages,
    )
    if split:
        _reduce_kernel[(T, Hq)](
            part_o, part_lse, out, num_splits,
            part_o.stride(0), part_o.stride(1), part_o.stride(2), part_lse.stride(0),
            part_lse.stride(1), out.stride(0), out.stride(1),
            HEAD_DIM=D, BLOCK_D=block_d, BLOCK_S=triton.next_power_of_2(num_splits), num_warps=4,
        )
    return out
