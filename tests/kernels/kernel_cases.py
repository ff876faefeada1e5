"""Random paged-attention batches and error measures shared by the kernel tests.

A case is described by per-sequence new-token counts and context lengths; the builder scatters
each sequence's blocks over a shuffled pool (so physical order never matches logical order),
optionally punches -1 holes into block tables, and fills everything with random values.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
needs_interpreter = pytest.mark.skipif(
    not INTERPRET, reason="CUDA present: the gpu-marked tests run these kernels compiled")
TOL = {torch.float32: 1e-3, torch.bfloat16: 1e-2}


@dataclass
class PagedBatch:
    q: torch.Tensor             # (T, Hq, D)
    k_cache: torch.Tensor       # (NB, BS, Hkv, D)
    v_cache: torch.Tensor
    cu_seqlens_q: torch.Tensor  # (B+1,) int32
    context_lens: torch.Tensor  # (B,) int32
    block_tables: torch.Tensor  # (B, max_blocks) int32
    max_q_len: int
    max_context_len: int

    def args(self):
        return (self.q, self.k_cache, self.v_cache, self.cu_seqlens_q, self.context_lens,
                self.block_tables, self.max_q_len, self.max_context_len)


def build_batch(q_lens, ctx_lens, num_heads, num_kv_heads, head_dim, block_size, dtype,
                device="cpu", holes=(), seed=0, spare_blocks=3) -> PagedBatch:
    """holes: (sequence, logical block) pairs set to -1 in the block table."""
    g = torch.Generator().manual_seed(seed)
    n_blocks = [(n + block_size - 1) // block_size for n in ctx_lens]
    total = sum(n_blocks) + spare_blocks
    perm = torch.randperm(total, generator=g)
    table = torch.full((len(q_lens), max(n_blocks + [1]) + 1), -1, dtype=torch.int32)
    used = 0
    for b, nb in enumerate(n_blocks):
        table[b, :nb] = perm[used:used + nb].to(torch.int32)
        used += nb
    for b, blk in holes:
        table[b, blk] = -1
    shape = (total, block_size, num_kv_heads, head_dim)
    k_cache = torch.randn(shape, generator=g).to(dtype)
    v_cache = torch.randn(shape, generator=g).to(dtype)
    q = torch.randn((sum(q_lens), num_heads, head_dim), generator=g).to(dtype)
    cu = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    return PagedBatch(q.to(device), k_cache.to(device), v_cache.to(device), cu.to(device),
                      torch.tensor(ctx_lens, dtype=torch.int32, device=device), table.to(device),
                      max(q_lens), max(ctx_lens))


def upcast(batch: PagedBatch) -> PagedBatch:
    """The same batch in float64 on the same device: the oracle's inputs (float64 on the GPU
    keeps the real-shape oracles from taking seconds each on the host)."""
    f = lambda t: t.detach().double()  # noqa: E731
    c = lambda t: t.detach()  # noqa: E731
    return PagedBatch(f(batch.q), f(batch.k_cache), f(batch.v_cache), c(batch.cu_seqlens_q),
                      c(batch.context_lens), c(batch.block_tables), batch.max_q_len,
                      batch.max_context_len)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere (an unwritten poisoned element) gives inf."""
    out = out.detach().cpu().double()
    ref = ref.detach().cpu().double()
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def poisoned_like(t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, float("nan"))
