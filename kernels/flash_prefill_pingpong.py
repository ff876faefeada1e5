"""FlashAttention prefill for Hopper (sm_90) in Gluon: ping-pong consumer warpgroups.

What it does: the packed path of kernels/flash_prefill.py (dense causal or full attention of a
batch's new tokens over their own keys, no cached prefix) for bf16/fp16 on an H100/H200, with
FlashAttention-3's two scheduling ideas written out by hand:

- warp specialisation: one producer warp issues every TMA load (Q once, then K/V tiles into a
  ring of NUM_BUF stages guarded by ready/empty mbarriers); NUM_CONSUMERS warpgroups compute,
  each on its own 64 query rows of the program's (64 * NUM_CONSUMERS)-row tile, all reading
  the same K/V stages;
- ping-pong: the consumers take turns issuing their MMAs (a ring of `turn` mbarriers), so that
  while one warpgroup runs its softmax (the exponentials: the limit at head dim 64) the tensor
  cores are busy with the other warpgroup's S = Q K^T and O += P V;
- inside each warpgroup, FlashAttention-3's algorithm 2: S_j and P_{j-1} V_{j-1} are issued
  together and the softmax of S_j runs while P_{j-1} V_{j-1} is still on the tensor cores;
- persistent: one program per SM loops over work items (a 64 * NUM_CONSUMERS-row tile of one
  head of one sequence), heaviest first, and the producer loads the next item while the
  consumers finish the current one;
- optionally (POLY) one exponential in 2, 4 or 8 as a polynomial on the FMA units instead of the
  special-function unit (FlashAttention-4's trick; measured slower, so off);
- online softmax with exp2 and log2(e) folded into the scale, the 1/l normalisation once in the
  epilogue; GQA by reading KV head h // GROUP; key tiles left of a warpgroup's rows run unmasked.

Every consumer iterates over the same key tiles (those the program's whole row tile needs), so
the turn ring and the stage counts stay in step. On a causal diagonal the warpgroups with the
earlier rows see some all-masked tiles: they cost time but not correctness (exp2(-inf) = 0, and
the running max is already finite from key 0).

What it does not do: read a cached prefix through the block table, sparse patterns, float32, or
run anywhere but sm_90 (triton's interpreter does not run Gluon). Those take the portable Triton
kernel in kernels/flash_prefill.py, which is also this kernel's oracle.
"""
from __future__ import annotations

import functools

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

ROWS_PER_CONSUMER = 64   # query rows per consumer warpgroup: one wgmma M
WG_ROWS = gl.constexpr(ROWS_PER_CONSUMER)


@gluon.jit
def _exp2_poly(x):
    """2^x on the FMA units, without the special-function unit (FlashAttention-4's trick).

    n = round(x) by the 1.5 * 2^23 magic add (its low bits are n), 2^(x - n) for x - n in
    [-0.5, 0.5] as a degree-3 polynomial (max relative error 1.0e-4, far under bf16's 3.9e-3
    rounding of P), and n added into the exponent bits. x is clamped at -126 so a masked -inf
    gives 2^-126 (about 1e-38, nothing a sum sees) rather than garbage."""
    x = gl.maximum(x, -126.0)
    t = x + 12582912.0                                                      # 1.5 * 2^23
    f = x - (t - 12582912.0)                                                # [-0.5, 0.5]
    p = 1.0 + f * (0.6932827892909564 + f * (0.24220876199053942 + f * 0.05500795150439344))
    bits = p.to(gl.int32, bitcast=True) + (t.to(gl.int32, bitcast=True) << 23)
    return bits.to(gl.float32, bitcast=True)


@gluon.jit
def _exp2_mixed(x, POLY: gl.constexpr):
    """exp2 of a wgmma-accumulator tile x (BM, BN): all on the special-function unit (POLY 0),
    or one element in POLY (2, 4 or 8) through _exp2_poly so both pipes share the work.

    The split follows the accumulator's registers: a thread holds columns 8 i + 2 q + e (q its
    lane in the quad, e in {0, 1}), so e and the low bits of i are register dimensions and the
    reshapes, permutes and splits below move no data."""
    if POLY == 0:
        return gl.exp2(x)
    BM: gl.constexpr = x.shape[0]
    BN: gl.constexpr = x.shape[1]
    if POLY == 2:
        lo, hi = gl.split(gl.reshape(x, [BM, BN // 2, 2]))                  # e = 0, e = 1
        y = gl.reshape(gl.join(gl.exp2(lo), _exp2_poly(hi)), [BM, BN])
        return gl.convert_layout(y, x.type.layout, assert_trivial=True)
    # POLY 4 or 8: split off the low i bit, then (POLY 8) the next one, then e.
    y = gl.permute(gl.reshape(x, [BM, BN // 16, 2, 8]), [0, 1, 3, 2])      # (BM, BN/16, 8, 2)
    i0, i1 = gl.split(y)                                                    # (BM, BN/16, 8)
    if POLY == 4:
        lo, hi = gl.split(gl.reshape(i1, [BM, BN // 16, 4, 2]))
        i1 = gl.reshape(gl.join(gl.exp2(lo), _exp2_poly(hi)), [BM, BN // 16, 8])
        i1 = gl.convert_layout(i1, i0.type.layout, assert_trivial=True)
    else:
        z = gl.permute(gl.reshape(i1, [BM, BN // 32, 2, 8]), [0, 1, 3, 2])
        j0, j1 = gl.split(z)                                                # (BM, BN/32, 8)
        lo, hi = gl.split(gl.reshape(j1, [BM, BN // 32, 4, 2]))
        j1 = gl.reshape(gl.join(gl.exp2(lo), _exp2_poly(hi)), [BM, BN // 32, 8])
        j1 = gl.convert_layout(j1, j0.type.layout, assert_trivial=True)
        i1 = gl.reshape(gl.permute(gl.join(gl.exp2(j0), j1), [0, 1, 3, 2]), [BM, BN // 16, 8])
        i1 = gl.convert_layout(i1, i0.type.layout, assert_trivial=True)
    y = gl.permute(gl.join(gl.exp2(i0), i1), [0, 1, 3, 2])                  # (BM, BN/16, 2, 8)
    return gl.convert_layout(gl.reshape(y, [BM, BN]), x.type.layout, assert_trivial=True)


@gluon.jit
def _softmax_step(s, m_i, l_i, qk_scale, offs_j, offs_i, q_len, MASK: gl.constexpr,
                  CAUSAL: gl.constexpr, POLY: gl.constexpr):
    """Online-softmax statistics for raw scores s (BM, BN): p (fp32), the new max, the new sum
    and alpha = exp2(m_old - m_new), the factor the accumulator still owes."""
    if MASK:
        ok = offs_j[None, :] < q_len                                        # (1, BN)
        if CAUSAL:
            ok = ok & (offs_j[None, :] <= offs_i[:, None])                  # (BM, BN)
        s = gl.where(ok, s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)                        # (BM,)
    p = _exp2_mixed(s * qk_scale - m_new[:, None], POLY)                    # (BM, BN)
    alpha = gl.exp2(m_i - m_new)                                            # (BM,)
    l_i = l_i * alpha + gl.sum(p, 1)
    return p, m_new, l_i, alpha


@gluon.jit
def _softmax_tile(s, m_i, l_i, qk_scale, j, offs_j, offs_i, q_len, full_end,
                  BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr, POLY: gl.constexpr):
    """_softmax_step for key tile j: masked only if the tile reaches past full_end."""
    if (j + 1) * BLOCK_N > full_end:
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N + offs_j, offs_i,
                                           q_len, True, CAUSAL, POLY)
    else:
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N + offs_j, offs_i,
                                           q_len, False, CAUSAL, POLY)
    return p, m_i, l_i, alpha


@gluon.jit
def _work_item(t, CuSeqQ, seq_offset, num_seqs, Hq, BLOCK_M: gl.constexpr):
    """Work item t -> (sequence start, length, first query row, head); m_lo < 0 if the item's
    row tile lies past its sequence (a shorter sequence of the batch). Items run heaviest row
    tiles first (the last tiles of each sequence, most keys under a causal mask), and items
    next to each other share a sequence and its heads' KV groups."""
    per_m = num_seqs * Hq
    m_rev = t // per_m
    rem = t - m_rev * per_m
    b = rem // Hq + seq_offset
    h = rem - (rem // Hq) * Hq
    q_start = gl.load(CuSeqQ + b)
    q_len = gl.load(CuSeqQ + b + 1) - q_start
    m_lo = (gl.cdiv(q_len, BLOCK_M) - 1 - m_rev) * BLOCK_M
    return q_start, q_len, m_lo, h


@gluon.jit
def _key_tiles(m_lo, q_len, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
               CAUSAL: gl.constexpr):
    """Number of key tiles the row tile at m_lo needs (all consumers iterate over these)."""
    if CAUSAL:
        n_end = gl.minimum(m_lo + BLOCK_M, q_len)
    else:
        n_end = q_len
    return gl.cdiv(n_end, BLOCK_N)


@gluon.jit
def _producer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, ready, empty,
              CuSeqQ, seq_offset, num_seqs, Hq, total, GROUP: gl.constexpr,
              HEAD_DIM: gl.constexpr, NUM_CONSUMERS: gl.constexpr, BLOCK_N: gl.constexpr,
              NUM_BUF: gl.constexpr, CAUSAL: gl.constexpr):
    """Worker partition (one warp): for each work item of this program, its Q rows (once the
    consumers are done with the last item's), then its K/V tiles as ring stages free up. It
    runs ahead into the next item while the consumers finish the current one."""
    BLOCK_M: gl.constexpr = WG_ROWS * NUM_CONSUMERS
    it = 0                                           # key tiles loaded so far (ring position)
    wi = 0                                           # work items loaded so far
    for t in range(gl.program_id(0), total, gl.num_programs(0)):
        q_start, q_len, m_lo, h = _work_item(t, CuSeqQ, seq_offset, num_seqs, Hq, BLOCK_M)
        if m_lo >= 0:
            n_tiles = _key_tiles(m_lo, q_len, BLOCK_M, BLOCK_N, CAUSAL)
            kv_col = (h // GROUP) * HEAD_DIM
            mbarrier.wait(q_empty, (wi & 1) ^ 1)     # fresh barriers pass phase 1
            mbarrier.expect(q_bar, NUM_CONSUMERS * q_desc.block_type.nbytes)
            for i in gl.static_range(NUM_CONSUMERS):
                tma.async_copy_global_to_shared(q_desc, [q_start + m_lo + i * WG_ROWS,
                                                         h * HEAD_DIM], q_bar, q_smem.index(i))
            for j in range(n_tiles):
                g = it + j
                buf = g % NUM_BUF
                mbarrier.wait(empty.index(buf), ((g // NUM_BUF) & 1) ^ 1)
                mbarrier.expect(ready.index(buf), 2 * k_desc.block_type.nbytes)
                row = q_start + j * BLOCK_N
                tma.async_copy_global_to_shared(k_desc, [row, kv_col], ready.index(buf),
                                                k_smem.index(buf))
                tma.async_copy_global_to_shared(v_desc, [row, kv_col], ready.index(buf),
                                                v_smem.index(buf))
            it += n_tiles
            wi += 1


@gluon.jit
def _consumer(q_smem, k_smem, v_smem, q_bar, q_empty, ready, empty, turn, Out, CuSeqQ,
              seq_offset, num_seqs, Hq, total, stride_ot, stride_oh, qk_scale, WG: gl.constexpr,
              NUM_CONSUMERS: gl.constexpr, HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr,
              NUM_BUF: gl.constexpr, CAUSAL: gl.constexpr, Q_REGS: gl.constexpr,
              POLY: gl.constexpr):
    """One consumer warpgroup: rows [m_lo + 64 WG, m_lo + 64 (WG + 1)) of each work item.

    Its MMAs are issued only on its turn (wait on turn[WG]), and the next warpgroup's turn
    begins as soon as they are issued (arrive on turn[WG + 1]), before this one's softmax.
    The ring position, turn count and item count carry over from item to item."""
    dtype: gl.constexpr = q_smem.dtype
    nw: gl.constexpr = gl.num_warps()
    BM: gl.constexpr = WG_ROWS
    BLOCK_M: gl.constexpr = WG_ROWS * NUM_CONSUMERS
    NEXT: gl.constexpr = (WG + 1) % NUM_CONSUMERS
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[nw, 1], instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[nw, 1], instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    col_s: gl.constexpr = gl.SliceLayout(0, s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    col_o: gl.constexpr = gl.SliceLayout(0, o_layout)
    q_mine = q_smem.index(WG)                                               # (BM, D) in smem
    offs_j = gl.arange(0, BLOCK_N, layout=col_s)
    s_zero = gl.zeros([BM, BLOCK_N], gl.float32, s_layout)

    it = 0                                  # key tiles consumed so far (ring position)
    tc = 0                                  # turns taken so far
    wi = 0                                  # work items so far
    for t in range(gl.program_id(0), total, gl.num_programs(0)):
        q_start, q_len, m_lo, h = _work_item(t, CuSeqQ, seq_offset, num_seqs, Hq, BLOCK_M)
        if m_lo >= 0:
            n_tiles = _key_tiles(m_lo, q_len, BLOCK_M, BLOCK_N, CAUSAL)
            row_lo = m_lo + WG * BM
            if CAUSAL:
                full_end = (row_lo // BLOCK_N) * BLOCK_N   # key tiles wholly left of the rows
            else:
                full_end = (q_len // BLOCK_N) * BLOCK_N
            offs_i = row_lo + gl.arange(0, BM, layout=row_s)               # (BM,) query index
            acc = gl.zeros([BM, HEAD_DIM], gl.float32, o_layout)
            m_i = gl.full([BM], float("-inf"), gl.float32, row_s)
            l_i = gl.zeros([BM], gl.float32, row_s)

            mbarrier.wait(q_bar, wi & 1)
            if Q_REGS:
                q_op = q_mine.load(gl.DotOperandLayout(operand_index=0, parent=s_layout,
                                                       k_width=2))
            else:
                q_op = q_mine
            # Key tile 0: S_0 alone.
            mbarrier.wait(ready.index(it % NUM_BUF), (it // NUM_BUF) & 1)
            mbarrier.wait(turn.index(WG), tc & 1)
            s = warpgroup_mma(q_op, k_smem.index(it % NUM_BUF).permute((1, 0)), s_zero,
                              use_acc=False, is_async=True)
            mbarrier.arrive(turn.index(NEXT), count=1)
            s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
            p, m_i, l_i, alpha = _softmax_tile(s, m_i, l_i, qk_scale, 0, offs_j, offs_i, q_len,
                                               full_end, BLOCK_N, CAUSAL, POLY)
            p_op = gl.convert_layout(p.to(dtype), p_layout)
            for j in range(1, n_tiles):
                g = it + j
                buf = g % NUM_BUF
                prev = (g - 1) % NUM_BUF
                mbarrier.wait(ready.index(buf), (g // NUM_BUF) & 1)
                mbarrier.wait(turn.index(WG), (tc + j) & 1)
                s = warpgroup_mma(q_op, k_smem.index(buf).permute((1, 0)), s_zero,
                                  use_acc=False, is_async=True)                 # S_j
                acc = warpgroup_mma(p_op, v_smem.index(prev), acc, is_async=True)  # O += PV
                mbarrier.arrive(turn.index(NEXT), count=1)
                s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))
                p, m_i, l_i, alpha = _softmax_tile(s, m_i, l_i, qk_scale, j, offs_j, offs_i,
                                                   q_len, full_end, BLOCK_N, CAUSAL, POLY)
                acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
                mbarrier.arrive(empty.index(prev), count=1)        # K_{j-1}, V_{j-1} consumed
                acc = acc * gl.convert_layout(alpha, row_o)[:, None]
                p_op = gl.convert_layout(p.to(dtype), p_layout)
            mbarrier.arrive(q_empty, count=1)                      # every S of the item done
            last = (it + n_tiles - 1) % NUM_BUF
            mbarrier.wait(turn.index(WG), (tc + n_tiles) & 1)
            acc = warpgroup_mma(p_op, v_smem.index(last), acc, is_async=True)
            mbarrier.arrive(turn.index(NEXT), count=1)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
            mbarrier.arrive(empty.index(last), count=1)

            out = acc / gl.convert_layout(l_i, row_o)[:, None]              # (BM, D)
            offs_m = row_lo + gl.arange(0, BM, layout=row_o)
            offs_d = gl.arange(0, HEAD_DIM, layout=col_o)
            ptrs = (Out + (q_start + offs_m).to(gl.int64)[:, None] * stride_ot + h * stride_oh
                    + offs_d[None, :])
            gl.store(ptrs, out.to(Out.dtype.element_ty), mask=(offs_m < q_len)[:, None])
            it += n_tiles
            tc += n_tiles + 1
            wi += 1


@gluon.jit(do_not_specialize=["seq_offset", "num_seqs", "total"])
def _prefill_pingpong_kernel(q_desc, k_desc, v_desc, Out, CuSeqQ, stride_ot, stride_oh,
                             qk_scale, seq_offset, num_seqs, total, GROUP: gl.constexpr,
                             HQ: gl.constexpr, HEAD_DIM: gl.constexpr,
                             NUM_CONSUMERS: gl.constexpr, BLOCK_N: gl.constexpr,
                             NUM_BUF: gl.constexpr, CAUSAL: gl.constexpr, Q_REGS: gl.constexpr,
                             CONSUMER_REGS: gl.constexpr, POLY: gl.constexpr,
                             num_warps: gl.constexpr):
    """Persistent: program p runs work items p, p + grid, ... (see _work_item)."""
    dtype: gl.constexpr = q_desc.dtype
    q_smem = gl.allocate_shared_memory(dtype, [NUM_CONSUMERS, WG_ROWS, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [NUM_CONSUMERS, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    mbarrier.init(q_empty, count=NUM_CONSUMERS)
    for i in gl.static_range(NUM_BUF):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=NUM_CONSUMERS)
    for i in gl.static_range(NUM_CONSUMERS):
        mbarrier.init(turn.index(i), count=1)
    mbarrier.arrive(turn.index(0), count=1)             # consumer 0 issues first
    if NUM_CONSUMERS == 2:
        gl.warp_specialize([
            (_consumer, (q_smem, k_smem, v_smem, q_bar, q_empty, ready, empty, turn, Out, CuSeqQ,
                         seq_offset, num_seqs, HQ, total, stride_ot, stride_oh, qk_scale, 0,
                         NUM_CONSUMERS, HEAD_DIM, BLOCK_N, NUM_BUF, CAUSAL, Q_REGS, POLY)),
            (_consumer, (q_smem, k_smem, v_smem, q_bar, q_empty, ready, empty, turn, Out, CuSeqQ,
                         seq_offset, num_seqs, HQ, total, stride_ot, stride_oh, qk_scale, 1,
                         NUM_CONSUMERS, HEAD_DIM, BLOCK_N, NUM_BUF, CAUSAL, Q_REGS, POLY)),
            (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, ready,
                         empty, CuSeqQ, seq_offset, num_seqs, HQ, total, GROUP, HEAD_DIM,
                         NUM_CONSUMERS, BLOCK_N, NUM_BUF, CAUSAL)),
        ], [4, 1], [CONSUMER_REGS, 24])
    else:
        gl.warp_specialize([
            (_consumer, (q_smem, k_smem, v_smem, q_bar, q_empty, ready, empty, turn, Out, CuSeqQ,
                         seq_offset, num_seqs, HQ, total, stride_ot, stride_oh, qk_scale, 0,
                         NUM_CONSUMERS, HEAD_DIM, BLOCK_N, NUM_BUF, CAUSAL, Q_REGS, POLY)),
            (_consumer, (q_smem, k_smem, v_smem, q_bar, q_empty, ready, empty, turn, Out, CuSeqQ,
                         seq_offset, num_seqs, HQ, total, stride_ot, stride_oh, qk_scale, 1,
                         NUM_CONSUMERS, HEAD_DIM, BLOCK_N, NUM_BUF, CAUSAL, Q_REGS, POLY)),
            (_consumer, (q_smem, k_smem, v_smem, q_bar, q_empty, ready, empty, turn, Out, CuSeqQ,
                         seq_offset, num_seqs, HQ, total, stride_ot, stride_oh, qk_scale, 2,
                         NUM_CONSUMERS, HEAD_DIM, BLOCK_N, NUM_BUF, CAUSAL, Q_REGS, POLY)),
            (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, ready,
                         empty, CuSeqQ, seq_offset, num_seqs, HQ, total, GROUP, HEAD_DIM,
                         NUM_CONSUMERS, BLOCK_N, NUM_BUF, CAUSAL)),
        ], [4, 4, 1], [CONSUMER_REGS, CONSUMER_REGS, 24])


# (head_dim, causal) -> (NUM_CONSUMERS, BLOCK_N, NUM_BUF, Q_REGS, CONSUMER_REGS, POLY)
PINGPONG_CONFIGS = {   # the best of benchmarks/prefill_pingpong.py on an H100, 2026-11-23
    (64, True): (2, 128, 3, 0, 240, 0),
    (64, False): (3, 128, 3, 0, 160, 0),
    (128, True): (2, 64, 3, 0, 240, 0),
    (128, False): (2, 64, 3, 0, 240, 0),
}


def _desc(t, rows: int, D: int, dtype):
    """A 2-D TMA descriptor over a (T, H, D) tensor seen as (T, H * D), tile [rows, D]."""
    T, H, _ = t.shape
    layout = gl.NVMMASharedLayout.get_default_for([rows, D], dtype)
    return TensorDescriptor(t, [T, H * D], [t.stride(0), 1], [rows, D], layout)


def prefill_pingpong(q, k_new, v_new, out, cu_seqlens_q, max_q_len: int, scale: float,
                     causal: bool = True, first_seq: int = 0, config=None,
                     maxnreg: int | None = None):
    """Launch on q (T, Hq, D), k_new/v_new (T, Hkv, D) packed, writing out (T, Hq, D)."""
    T, Hq, D = q.shape
    Hkv = k_new.shape[1]
    num_seqs = cu_seqlens_q.shape[0] - 1 - first_seq
    if num_seqs <= 0 or max_q_len <= 0 or T == 0:
        return out
    cfg = tuple(config or PINGPONG_CONFIGS[(D, causal)])
    consumers, block_n, num_buf, q_regs, regs, poly = cfg + (0,) * (6 - len(cfg))
    block_m = ROWS_PER_CONSUMER * consumers
    gdt = gl.bfloat16 if q.dtype == torch.bfloat16 else gl.float16
    total = triton.cdiv(max_q_len, block_m) * num_seqs * Hq             # work items
    grid = (min(total, _num_sms(q.device)),)
    kwargs = {"maxnreg": maxnreg} if maxnreg else {}
    _prefill_pingpong_kernel[grid](
        _desc(q, ROWS_PER_CONSUMER, D, gdt), _desc(k_new, block_n, D, gdt),
        _desc(v_new, block_n, D, gdt), out, cu_seqlens_q, out.stride(0), out.stride(1),
        scale * 1.4426950408889634, first_seq, num_seqs, total, GROUP=Hq // Hkv, HQ=Hq,
        HEAD_DIM=D, NUM_CONSUMERS=consumers, BLOCK_N=block_n, NUM_BUF=num_buf, CAUSAL=causal,
        Q_REGS=bool(q_regs), CONSUMER_REGS=regs, POLY=poly, num_warps=4, **kwargs)
    return out


@functools.lru_cache(maxsize=None)
def _num_sms(device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count
