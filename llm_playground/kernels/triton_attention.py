"""Triton paged attention for a mixed batch: decodes through the paged decode kernel, the rest
through the flash prefill kernel, both writing into one output tensor.

Same signature and meaning as kernels.reference.paged_attention_ref. The batch layout is the one
of model/network/batch.py: sequences 0..num_decodes-1 are decodes (one new token each, tokens
0..num_decodes-1), the others are prefill chunks (any number of new tokens, possibly after a
cached prefix). With num_decodes == 0 every sequence goes through the prefill kernel, which is
correct for one-token sequences too, only slower than the decode kernel.

Speculative verification: the `num_verify` sequences right after the decodes each bring the same
number of new tokens, `verify_q_len` (the last accepted token and K proposals): they go through the
paged decode kernel with `query_per_seq = verify_q_len` (all query heads of a KV group and all
K+1 tokens are rows of one query tile, causal among the tokens), which reads each K/V tile once
per sequence as a plain decode does; the prefill kernel takes the sequences after them.

This module only routes; the kernels live in kernels/paged_decode.py and kernels/flash_prefill.py.
"""
from __future__ import annotations

import torch

from llm_playground.kernels.flash_prefill import flash_prefill
from llm_playground.kernels.mask import DENSE, MaskSpec
from llm_playground.kernels.paged_decode import paged_decode


def paged_attention(
    q: torch.Tensor,             # (T, Hq, D)
    k_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    v_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    cu_seqlens_q: torch.Tensor,  # (B+1,) int32
    context_lens: torch.Tensor,  # (B,) int32
    block_tables: torch.Tensor,  # (B, max_blocks) int32, -1 = hole / unused
    max_q_len: int,
    max_context_len: int,
    scale: float,
    mask: MaskSpec = DENSE,
    num_decodes: int = 0,
    out: torch.Tensor | None = None,  # (T, Hq, D)
    holes: bool = True,          # False: no table has a -1 inside its context (see AttentionBatch)
    k_new: torch.Tensor | None = None,  # (T, Hkv, D) the new tokens' rotated keys, packed like q
    v_new: torch.Tensor | None = None,  # (T, Hkv, D) their values (dense masks: read from here)
    prefix: bool = True,         # False: no prefill chunk has cached tokens before it
    kv_scales: tuple[torch.Tensor, torch.Tensor] | None = None,  # 8-bit caches (kv_quant.py)
    num_verify: int = 0,         # sequences num_decodes.. with verify_q_len new tokens each
    verify_q_len: int = 0,
) -> torch.Tensor:
    """Mixed-batch paged attention: decodes by paged_decode, the rest by flash_prefill.
    With kv_scales the decode kernel reads the 8-bit codes itself; the prefill kernel reads the
    blocks its sequences' tables name dequantised into a temporary cache (kv_quant.dequantized_view:
    prefill is compute-bound, and flash_prefill stays one kernel for every cache dtype)."""
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:  # noqa: E501
        raise ValueError(f"paged_attention: expected q (T, Hq, D) and caches (NB, BS, Hkv, D), got "
                         f"{tuple(q.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    if q.shape[1] % k_cache.shape[2] or q.shape[2] != k_cache.shape[3]:
        raise ValueError(f"paged_attention: {q.shape[1]} query heads / dim {q.shape[2]} do not fit "
                         f"{k_cache.shape[2]} KV heads / dim {k_cache.shape[3]}")
    if out is None:
        out = torch.empty_like(q)
    num_seqs = context_lens.shape[0]
    ks, vs = kv_scales if kv_scales is not None else (None, None)
    if num_decodes > 0:
        paged_decode(q, k_cache, v_cache, context_lens, block_tables, num_decodes,
                     max_context_len, scale, mask, out, k_scale=ks, v_scale=vs)
    first = num_decodes
    if num_verify > 0 and verify_q_len > 0:
        # Verify rows start at token num_decodes (every decode row has one token): the decode
        # kernel reads views that begin there.
        t0, t1 = num_decodes, num_decodes + num_verify * verify_q_len
        paged_decode(q[t0:t1], k_cache, v_cache, context_lens[first:], block_tables[first:],
                     num_verify, max_context_len, scale, mask, out[t0:t1],
                     query_per_seq=verify_q_len, k_scale=ks, v_scale=vs)
        first += num_verify
    if num_seqs > first and max_q_len > 0 and kv_scales is not None:
        from llm_playground.kernels.kv_quant import dequantized_view
        # only the prefill rows' blocks; the decode and verify rows get empty (-1) tables
        k_cache, v_cache, tail = dequantized_view(k_cache, v_cache, ks, vs,
                                                  block_tables[first:], q.dtype)
        block_tables = torch.cat([torch.full_like(block_tables[:first], -1), tail])
    if num_seqs > first and max_q_len > 0:
        flash_prefill(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, max_q_len,
                      scale, mask, out, first_seq=first, holes=holes, k_new=k_new,
                      v_new=v_new, prefix=prefix)
    return out
