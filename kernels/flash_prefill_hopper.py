"""FlashAttention prefill for Hopper (sm_90) in Gluon, with the softmax overlapped with the MMAs.

What it does: the packed path of kernels/flash_prefill.py (dense causal or full attention of a
batch's new tokens over their own keys, no cached prefix) for bf16/fp16 on an H100/H200,
written in Gluon (triton.experimental.gluon) so that the schedule is ours rather than the
compiler's. One program (one warpgroup, or two with the tiles shared) computes BLOCK_M query
rows of one query head of one sequence:

- K and V tiles arrive by TMA into a ring of NUM_BUF shared-memory stages, one mbarrier per
  stage, issued NUM_BUF tiles ahead;
- the loop is FlashAttention-3's intra-warpgroup overlap: S_j = Q K_j^T and O += P_{j-1} V_{j-1}
  are issued as asynchronous wgmma, the softmax of S_j (the exponentials, the limit at head dim 64)
  runs while P_{j-1} V_{j-1} is still on the tensor cores, and O is rescaled only after that MMA
  completes; P stays in registers (the A operand of the PV wgmma);
- online softmax with exp2 and log2(e) folded into the scale, the 1/l normalisation once in the
  epilogue; GQA by reading KV head h // GROUP; causal tiles left of the diagonal run unmasked;
- rows past the sequence are never stored; keys past it (the next sequence's rows, or TMA's zero
  fill past the batch) are masked.

What it does not do: read a cached prefix through the block table, sparse patterns, float32, or
run anywhere but sm_90 (no interpreter: triton's interpreter does not run Gluon). Those cases take
the portable Triton kernel in kernels/flash_prefill.py, which is also this kernel's oracle.
"""
from __future__ import annotations

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


@gluon.jit
def _softmax_step(s, m_i, l_i, qk_scale, offs_j, offs_i, q_len, MASK: gl.constexpr,
                  CAUSAL: gl.constexpr):
    """Online-softmax statistics for raw scores s (BM, BN): returns p (fp32), the new max, the
    new sum and alpha = exp2(m_old - m_new) (the factor the accumulator still owes)."""
    if MASK:
        ok = offs_j[None, :] < q_len                                        # (1, BN)
        if CAUSAL:
            ok = ok & (offs_j[None, :] <= offs_i[:, None])                  # (BM, BN)
        s = gl.where(ok, s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)                        # (BM,)
    p = gl.exp2(s * qk_scale - m_new[:, None])                              # (BM, BN)
    alpha = gl.exp2(m_i - m_new)                                            # (BM,)
    l_i = l_i * alpha + gl.sum(p, 1)
    return p, m_new, l_i, alpha


@gluon.jit
def _softmax_tile(s, m_i, l_i, qk_scale, j, offs_j, offs_i, q_len, full_end,
                  BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr):
    """_softmax_step for key tile j: masked only if the tile reaches past full_end."""
    if (j + 1) * BLOCK_N > full_end:
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N + offs_j, offs_i,
                                           q_len, True, CAUSAL)
    else:
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N + offs_j, offs_i,
                                           q_len, False, CAUSAL)
    return p, m_i, l_i, alpha


@gluon.jit
def _load_kv(k_desc, v_desc, k_smem, v_smem, bars, buf, tile, n_tiles, q_start, kv_col,
             kv_bytes: gl.constexpr, BLOCK_N: gl.constexpr):
    """TMA of key tile `tile` (K and V on the stage's one barrier) into stage `buf`, if it exists."""
    pred = tile < n_tiles
    row = q_start + tile * BLOCK_N
    mbarrier.expect(bars.index(buf), 2 * kv_bytes, pred=pred)
    tma.async_copy_global_to_shared(k_desc, [row, kv_col], bars.index(buf), k_smem.index(buf),
                                    pred=pred)
    tma.async_copy_global_to_shared(v_desc, [row, kv_col], bars.index(buf), v_smem.index(buf),
                                    pred=pred)


@gluon.jit(do_not_specialize=["seq_offset"])
def _prefill_hopper_kernel(q_desc, k_desc, v_desc, Out, CuSeqQ, stride_ot, stride_oh, qk_scale,
                           seq_offset, GROUP: gl.constexpr, HEAD_DIM: gl.constexpr,
                           BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_BUF: gl.constexpr,
                           CAUSAL: gl.constexpr, SCHEDULE: gl.constexpr, Q_REGS: gl.constexpr,
                           num_warps: gl.constexpr):
    dtype: gl.constexpr = q_desc.dtype
    h = gl.program_id(0)
    b = gl.program_id(2) + seq_offset
    q_start = gl.load(CuSeqQ + b)
    q_len = gl.load(CuSeqQ + b + 1) - q_start
    m_tile = gl.cdiv(q_len, BLOCK_M) - 1 - gl.program_id(1)   # heaviest (last) tiles launch first
    if m_tile >= 0:
        m_lo = m_tile * BLOCK_M
        kv_col = (h // GROUP) * HEAD_DIM

        # wgmma layouts: S (BM, BN) and O (BM, D) accumulators; P as the register A operand of PV.
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BLOCK_N, 16])
        o_layout: gl.constexpr = gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, HEAD_DIM, 16])
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
        row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
        col_s: gl.constexpr = gl.SliceLayout(0, s_layout)
        row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
        col_o: gl.constexpr = gl.SliceLayout(0, o_layout)

        q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], q_desc.layout)
        k_smem = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK_N, HEAD_DIM], k_desc.layout)
        v_smem = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK_N, HEAD_DIM], v_desc.layout)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        bars = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
        for i in gl.static_range(NUM_BUF):
            mbarrier.init(bars.index(i), count=1)

        if CAUSAL:
            n_end = gl.minimum(m_lo + BLOCK_M, q_len)
            full_end = (m_lo // BLOCK_N) * BLOCK_N     # key tiles wholly left of the query tile
        else:
            n_end = q_len
            full_end = (q_len // BLOCK_N) * BLOCK_N
        n_tiles = gl.cdiv(n_end, BLOCK_N)
        kv_bytes: gl.constexpr = BLOCK_N * HEAD_DIM * dtype.primitive_bitwidth // 8

        mbarrier.expect(q_bar, BLOCK_M * HEAD_DIM * dtype.primitive_bitwidth // 8)
        tma.async_copy_global_to_shared(q_desc, [q_start + m_lo, h * HEAD_DIM], q_bar, q_smem)
        for i in gl.static_range(NUM_BUF):             # prologue: the first NUM_BUF key tiles
            _load_kv(k_desc, v_desc, k_smem, v_smem, bars, i, i, n_tiles, q_start,
                     kv_col, kv_bytes, BLOCK_N)

        offs_i = m_lo + gl.arange(0, BLOCK_M, layout=row_s)                 # (BM,) query index
        offs_j = gl.arange(0, BLOCK_N, layout=col_s)
        s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
        acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
        m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, row_s)
        l_i = gl.zeros([BLOCK_M], gl.float32, row_s)

        # Tile 0: S_0 and its softmax, nothing to overlap with yet.
        mbarrier.wait(q_bar, 0)
        if Q_REGS:   # Q as the register A operand: the QK wgmma reads only K from shared memory
            q_op = q_smem.load(gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2))
        else:
            q_op = q_smem
        mbarrier.wait(bars.index(0), 0)
        s = warpgroup_mma(q_op, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False,
                          is_async=True)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
        p, m_i, l_i, alpha = _softmax_tile(s, m_i, l_i, qk_scale, 0, offs_j, offs_i, q_len,
                                           full_end, BLOCK_N, CAUSAL)
        p_op = gl.convert_layout(p.to(dtype), p_layout)

        if SCHEDULE == 1:
            # FlashAttention-3's algorithm 2: the softmax of S_j overlaps P_{j-1} V_{j-1}.
            for j in range(1, n_tiles):
                buf = j % NUM_BUF
                prev = (j - 1) % NUM_BUF
                mbarrier.wait(bars.index(buf), (j // NUM_BUF) & 1)
                s = warpgroup_mma(q_op, k_smem.index(buf).permute((1, 0)), s_zero,
                                  use_acc=False, is_async=True)                 # S_j, async
                mbarrier.wait(bars.index(prev), ((j - 1) // NUM_BUF) & 1)
                acc = warpgroup_mma(p_op, v_smem.index(prev), acc, is_async=True)  # O += P V
                s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))        # S_j done, PV runs
                p, m_i, l_i, alpha = _softmax_tile(s, m_i, l_i, qk_scale, j, offs_j, offs_i,
                                                   q_len, full_end, BLOCK_N, CAUSAL)
                # PV_{j-1} done: its P registers and the stage `prev` are free again.
                acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
                acc = acc * gl.convert_layout(alpha, row_o)[:, None]
                p_op = gl.convert_layout(p.to(dtype), p_layout)
                if num_warps > 4:
                    gl.thread_barrier()               # every warpgroup is done with stage `prev`
                _load_kv(k_desc, v_desc, k_smem, v_smem, bars, prev,
                         j - 1 + NUM_BUF, n_tiles, q_start, kv_col, kv_bytes, BLOCK_N)
        elif n_tiles > 1:
            # Deeper overlap: the softmax of S_j runs while both S_{j+1} = Q K_{j+1}^T and
            # P_{j-1} V_{j-1} are on the tensor cores (one more S tile of registers).
            mbarrier.wait(bars.index(1), 0)
            s = warpgroup_mma(q_op, k_smem.index(1).permute((1, 0)), s_zero, use_acc=False,
                              is_async=True)
            s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))            # S_1
            for j in range(1, n_tiles - 1):
                nb = (j + 1) % NUM_BUF
                prev = (j - 1) % NUM_BUF
                mbarrier.wait(bars.index(nb), ((j + 1) // NUM_BUF) & 1)
                s_next = warpgroup_mma(q_op, k_smem.index(nb).permute((1, 0)), s_zero,
                                       use_acc=False, is_async=True)        # S_{j+1}, async
                mbarrier.wait(bars.index(prev), ((j - 1) // NUM_BUF) & 1)
                acc = warpgroup_mma(p_op, v_smem.index(prev), acc, is_async=True)
                p, m_i, l_i, alpha = _softmax_tile(s, m_i, l_i, qk_scale, j, offs_j, offs_i,
                                                   q_len, full_end, BLOCK_N, CAUSAL)
                s_next, acc, p_op = warpgroup_mma_wait(num_outstanding=0,
                                                       deps=(s_next, acc, p_op))
                acc = acc * gl.convert_layout(alpha, row_o)[:, None]
                p_op = gl.convert_layout(p.to(dtype), p_layout)
                if num_warps > 4:
                    gl.thread_barrier()
                _load_kv(k_desc, v_desc, k_smem, v_smem, bars, prev,
                         j - 1 + NUM_BUF, n_tiles, q_start, kv_col, kv_bytes, BLOCK_N)
                s = s_next
            j = n_tiles - 1                             # the last tile: nothing left to issue
            prev = (j - 1) % NUM_BUF
            mbarrier.wait(bars.index(prev), ((j - 1) // NUM_BUF) & 1)
            acc = warpgroup_mma(p_op, v_smem.index(prev), acc, is_async=True)
            p, m_i, l_i, alpha = _softmax_tile(s, m_i, l_i, qk_scale, j, offs_j, offs_i, q_len,
                                               full_end, BLOCK_N, CAUSAL)
            acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
            acc = acc * gl.convert_layout(alpha, row_o)[:, None]
            p_op = gl.convert_layout(p.to(dtype), p_layout)

        last = (n_tiles - 1) % NUM_BUF
        mbarrier.wait(bars.index(last), ((n_tiles - 1) // NUM_BUF) & 1)
        acc = warpgroup_mma(p_op, v_smem.index(last), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mbarrier.invalidate(q_bar)
        for i in gl.static_range(NUM_BUF):
            mbarrier.invalidate(bars.index(i))

        out = acc / gl.convert_layout(l_i, row_o)[:, None]                  # (BM, D)
        offs_m = m_lo + gl.arange(0, BLOCK_M, layout=row_o)
        offs_d = gl.arange(0, HEAD_DIM, layout=col_o)
        ptrs = (Out + (q_start + offs_m).to(gl.int64)[:, None] * stride_ot + h * stride_oh
                + offs_d[None, :])
        gl.store(ptrs, out.to(Out.dtype.element_ty), mask=(offs_m < q_len)[:, None])


# (head_dim, causal) -> (BLOCK_M, BLOCK_N, NUM_BUF, num_warps, SCHEDULE, Q_REGS)
HOPPER_CONFIGS = {
    (64, True): (128, 64, 3, 4, 1, 0),
    (64, False): (64, 128, 3, 4, 1, 0),
    (128, True): (64, 64, 3, 4, 1, 0),
    (128, False): (128, 64, 3, 8, 1, 0),
}


def _desc(t, rows: int, D: int, dtype):
    """A 2-D TMA descriptor over a (T, H, D) tensor seen as (T, H * D), tile [rows, D]."""
    T, H, _ = t.shape
    layout = gl.NVMMASharedLayout.get_default_for([rows, D], dtype)
    return TensorDescriptor(t, [T, H * D], [t.stride(0), 1], [rows, D], layout)


def prefill_hopper(q, k_new, v_new, out, cu_seqlens_q, max_q_len: int, scale: float,
                   causal: bool = True, first_seq: int = 0, config=None, maxnreg: int = 128):
    """Launch on q (T, Hq, D), k_new/v_new (T, Hkv, D) packed, writing out (T, Hq, D)."""
    T, Hq, D = q.shape
    Hkv = k_new.shape[1]
    num_seqs = cu_seqlens_q.shape[0] - 1 - first_seq
    if num_seqs <= 0 or max_q_len <= 0 or T == 0:
        return out
    block_m, block_n, num_buf, warps, schedule, q_regs = config or HOPPER_CONFIGS[(D, causal)]
    if num_buf < 2 + (schedule == 2) - (schedule == 3):
        raise ValueError(f"prefill_hopper: schedule {schedule} needs at least {2 + (schedule == 2)} "
                         f"stages, got {num_buf}")
    gdt = gl.bfloat16 if q.dtype == torch.bfloat16 else gl.float16
    grid = (Hq, triton.cdiv(max_q_len, block_m), num_seqs)
    if schedule == 3:
        _prefill_hopper_ws_kernel[grid](
            _desc(q, block_m, D, gdt), _desc(k_new, block_n, D, gdt),
            _desc(v_new, block_n, D, gdt), out, cu_seqlens_q, out.stride(0), out.stride(1),
            scale * 1.4426950408889634, first_seq, GROUP=Hq // Hkv, HEAD_DIM=D, BLOCK_M=block_m,
            BLOCK_N=block_n, NUM_BUF=num_buf, CAUSAL=causal, Q_REGS=bool(q_regs),
            num_warps=warps, maxnreg=maxnreg)
        return out
    _prefill_hopper_kernel[grid](
        _desc(q, block_m, D, gdt), _desc(k_new, block_n, D, gdt), _desc(v_new, block_n, D, gdt),
        out, cu_seqlens_q, out.stride(0), out.stride(1), scale * 1.4426950408889634, first_seq,
        GROUP=Hq // Hkv, HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n, NUM_BUF=num_buf,
        CAUSAL=causal, SCHEDULE=schedule, Q_REGS=bool(q_regs),
        num_warps=warps)
    return out


# ---- warp-specialised variant: one loader warp (TMA), the default warpgroup computes ----

@gluon.jit
def _ws_loader(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, ready, empty, q_row, q_col,
               q_start, kv_col, n_tiles, BLOCK_N: gl.constexpr, NUM_BUF: gl.constexpr):
    """Worker partition (1 warp): Q once, then key tiles into the ring as stages free up."""
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [q_row, q_col], q_bar, q_smem)
    for t in range(n_tiles):
        buf = t % NUM_BUF
        mbarrier.wait(empty.index(buf), ((t // NUM_BUF) & 1) ^ 1)   # fresh barriers pass phase 1
        mbarrier.expect(ready.index(buf), 2 * k_desc.block_type.nbytes)
        row = q_start + t * BLOCK_N
        tma.async_copy_global_to_shared(k_desc, [row, kv_col], ready.index(buf), k_smem.index(buf))
        tma.async_copy_global_to_shared(v_desc, [row, kv_col], ready.index(buf), v_smem.index(buf))


@gluon.jit
def _ws_compute(q_smem, k_smem, v_smem, q_bar, ready, empty, Out, q_start, q_len, m_lo, h,
                stride_ot, stride_oh, qk_scale, n_tiles, full_end, HEAD_DIM: gl.constexpr,
                BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_BUF: gl.constexpr,
                CAUSAL: gl.constexpr, Q_REGS: gl.constexpr):
    """Default partition (one warpgroup): the schedule-1 loop, releasing each stage by mbarrier."""
    dtype: gl.constexpr = q_smem.dtype
    nw: gl.constexpr = gl.num_warps()
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[nw, 1], instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[nw, 1], instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    col_s: gl.constexpr = gl.SliceLayout(0, s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    col_o: gl.constexpr = gl.SliceLayout(0, o_layout)

    offs_i = m_lo + gl.arange(0, BLOCK_M, layout=row_s)
    offs_j = gl.arange(0, BLOCK_N, layout=col_s)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, row_s)
    l_i = gl.zeros([BLOCK_M], gl.float32, row_s)

    mbarrier.wait(q_bar, 0)
    if Q_REGS:
        q_op = q_smem.load(gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2))
    else:
        q_op = q_smem
    mbarrier.wait(ready.index(0), 0)
    s = warpgroup_mma(q_op, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False,
                      is_async=True)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
    p, m_i, l_i, alpha = _softmax_tile(s, m_i, l_i, qk_scale, 0, offs_j, offs_i, q_len,
                                       full_end, BLOCK_N, CAUSAL)
    p_op = gl.convert_layout(p.to(dtype), p_layout)
    for j in range(1, n_tiles):
        buf = j % NUM_BUF
        prev = (j - 1) % NUM_BUF
        mbarrier.wait(ready.index(buf), (j // NUM_BUF) & 1)
        s = warpgroup_mma(q_op, k_smem.index(buf).permute((1, 0)), s_zero, use_acc=False,
                          is_async=True)
        acc = warpgroup_mma(p_op, v_smem.index(prev), acc, is_async=True)
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))
        p, m_i, l_i, alpha = _softmax_tile(s, m_i, l_i, qk_scale, j, offs_j, offs_i, q_len,
                                           full_end, BLOCK_N, CAUSAL)
        acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
        mbarrier.arrive(empty.index(prev), count=1)            # K_{j-1} and V_{j-1} consumed
        acc = acc * gl.convert_layout(alpha, row_o)[:, None]
        p_op = gl.convert_layout(p.to(dtype), p_layout)
    last = (n_tiles - 1) % NUM_BUF
    acc = warpgroup_mma(p_op, v_smem.index(last), acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))

    out = acc / gl.convert_layout(l_i, row_o)[:, None]                      # (BM, D)
    offs_m = m_lo + gl.arange(0, BLOCK_M, layout=row_o)
    offs_d = gl.arange(0, HEAD_DIM, layout=col_o)
    ptrs = (Out + (q_start + offs_m).to(gl.int64)[:, None] * stride_ot + h * stride_oh
            + offs_d[None, :])
    gl.store(ptrs, out.to(Out.dtype.element_ty), mask=(offs_m < q_len)[:, None])


@gluon.jit(do_not_specialize=["seq_offset"])
def _prefill_hopper_ws_kernel(q_desc, k_desc, v_desc, Out, CuSeqQ, stride_ot, stride_oh,
                              qk_scale, seq_offset, GROUP: gl.constexpr, HEAD_DIM: gl.constexpr,
                              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                              NUM_BUF: gl.constexpr, CAUSAL: gl.constexpr,
                              Q_REGS: gl.constexpr, num_warps: gl.constexpr):
    dtype: gl.constexpr = q_desc.dtype
    h = gl.program_id(0)
    b = gl.program_id(2) + seq_offset
    q_start = gl.load(CuSeqQ + b)
    q_len = gl.load(CuSeqQ + b + 1) - q_start
    m_tile = gl.cdiv(q_len, BLOCK_M) - 1 - gl.program_id(1)
    if m_tile >= 0:
        m_lo = m_tile * BLOCK_M
        q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], q_desc.layout)
        k_smem = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK_N, HEAD_DIM], k_desc.layout)
        v_smem = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK_N, HEAD_DIM], v_desc.layout)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        ready = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
        for i in gl.static_range(NUM_BUF):
            mbarrier.init(ready.index(i), count=1)
            mbarrier.init(empty.index(i), count=1)
        if CAUSAL:
            n_end = gl.minimum(m_lo + BLOCK_M, q_len)
            full_end = (m_lo // BLOCK_N) * BLOCK_N
        else:
            n_end = q_len
            full_end = (q_len // BLOCK_N) * BLOCK_N
        n_tiles = gl.cdiv(n_end, BLOCK_N)
        gl.warp_specialize([
            (_ws_compute, (q_smem, k_smem, v_smem, q_bar, ready, empty, Out, q_start, q_len, m_lo,
                           h, stride_ot, stride_oh, qk_scale, n_tiles, full_end, HEAD_DIM,
                           BLOCK_M, BLOCK_N, NUM_BUF, CAUSAL, Q_REGS)),
            (_ws_loader, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, ready, empty,
                          q_start + m_lo, h * HEAD_DIM, q_start, (h // GROUP) * HEAD_DIM, n_tiles,
                          BLOCK_N, NUM_BUF)),
        ], [1], [24])
