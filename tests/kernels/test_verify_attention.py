"""Speculative verification through the paged decode kernel: K+1 query tokens per sequence,
causal among them, against the float64 torch reference (kernels/reference.py).

CPU: the Triton kernels under TRITON_INTERPRET=1 on small shapes: verify rows alone (the decode
kernel with query_per_seq = K + 1, one split and several), and the mixed batch the engine
builds (decodes, then verify rows of one length, then a verify row of another length and a
prefill chunk, which the prefill kernel takes), with holes and the mask patterns speculation
allows (dense, atrous). GPU (@pytest.mark.gpu): the same at the shapes the benchmarks use.
Outputs are poisoned with NaN, so a token the kernels never write fails.
"""
from __future__ import annotations

import pytest
import torch

from kernel_cases import TOL, build_batch, needs_interpreter, poisoned_like, rel_err, upcast
from llm_playground.kernels.mask import MaskSpec
from llm_playground.kernels.reference import paged_attention_ref

ATROUS = MaskSpec(stride=3)


def run_mixed(q_lens, ctx_lens, hq, hkv, d, bs, mask, num_decodes, num_verify, verify_q_len,
              dtype, device, holes=()):
    """triton_attention.paged_attention on the batch, routed as the engine asks; returns the
    relative error against the reference."""
    from llm_playground.kernels import triton_attention
    batch = build_batch(q_lens, ctx_lens, hq, hkv, d, bs, dtype, device, holes)
    out = poisoned_like(batch.q)
    triton_attention.paged_attention(*batch.args(), d ** -0.5, mask, num_decodes, out,
                                     holes=bool(holes), num_verify=num_verify,
                                     verify_q_len=verify_q_len)
    ref = paged_attention_ref(*upcast(batch).args(), d ** -0.5, mask)
    return rel_err(out, ref)


@needs_interpreter
@pytest.mark.parametrize("k", [1, 2, 4, 7])
@pytest.mark.parametrize("splits", [1, 3])
def test_decode_kernel_with_k_plus_1_queries_interpreted(k, splits):
    """The decode kernel alone: every sequence brings k + 1 tokens at the end of its context."""
    from llm_playground.kernels.paged_decode import paged_decode
    q = k + 1
    ctx = [q, 19, 70]
    batch = build_batch([q] * 3, ctx, 6, 2, 64, 8, torch.float32, "cpu")
    out = poisoned_like(batch.q)
    paged_decode(batch.q, batch.k_cache, batch.v_cache, batch.context_lens, batch.block_tables,
                 3, batch.max_context_len, 64 ** -0.5, MaskSpec(), out, query_per_seq=q,
                 num_splits=splits)
    ref = paged_attention_ref(*upcast(batch).args(), 64 ** -0.5, MaskSpec())
    assert rel_err(out, ref) < TOL[torch.float32]


CASES = {
    # q_lens, ctx_lens, Hq, Hkv, D, BS, mask, num_decodes, num_verify, verify_q_len, holes
    "verify_only_gqa3": ([5, 5], [40, 5], 3, 1, 64, 16, MaskSpec(), 0, 2, 5, ()),
    "mixed_engine_layout": ([1, 1, 4, 4, 4, 3, 9], [30, 2, 60, 4, 17, 21, 25], 4, 2, 64, 4,
                            MaskSpec(), 2, 3, 4, ()),
    "verify_with_holes": ([1, 3, 3], [33, 41, 12], 4, 4, 64, 8, MaskSpec(), 1, 2, 3,
                          ((1, 1),)),
    "atrous_verify": ([1, 6, 6], [50, 37, 80], 8, 1, 64, 8, ATROUS, 1, 2, 6, ()),
}


@needs_interpreter
@pytest.mark.parametrize("name", list(CASES))
def test_mixed_batch_with_verify_rows_interpreted(name):
    *case, holes = CASES[name]
    assert run_mixed(*case, torch.float32, "cpu", holes) < TOL[torch.float32]


@needs_interpreter
def test_mixed_batch_with_verify_rows_bf16_interpreted():
    *case, holes = CASES["mixed_engine_layout"]
    assert run_mixed(*case, torch.bfloat16, "cpu", holes) < TOL[torch.bfloat16]


@pytest.mark.gpu
@pytest.mark.parametrize("k", [2, 4, 8])
@pytest.mark.parametrize("shape", [(9, 3, 64), (32, 8, 128)], ids=["smollm2", "llama3-8b"])
def test_verify_rows_real_shapes_gpu(k, shape):
    hq, hkv, d = shape
    B = 16
    ctx = [300 + 97 * i for i in range(B)]
    err = run_mixed([1] * 2 + [k + 1] * B, [500, 20] + ctx, hq, hkv, d, 16, MaskSpec(), 2, B,
                    k + 1, torch.bfloat16, "cuda")
    assert err < TOL[torch.bfloat16]
