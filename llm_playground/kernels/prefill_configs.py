"""Tile configurations of the FlashAttention prefill kernel (kernels/flash_prefill.py): tables, pick.

Each configuration is (BLOCK_M, BLOCK_N, num_warps, num_stages): query tokens per tile, keys per
tile, and the launch's warps and pipeline stages. The tables hold the winners of the sweeps in
benchmarks/prefill_attention.py on an H100 (the dates and figures are beside each table), per
head dimension for the block-table path and the packed path (causal, and full attention for the
benchmarks), and per (head dimension, causal) for short prompts. `choose_config` picks the one a
launch uses: a small tile under the Triton interpreter (CPU tests), one that fits every head dim
in float32, else the tables.
It does not launch anything or know about tensors: flash_prefill passes the facts in, and an
explicit `config=` there bypasses this module.
"""
from __future__ import annotations

Config = tuple[int, int, int, int]       # (BLOCK_M, BLOCK_N, num_warps, num_stages)

# head_dim -> (BLOCK_M, BLOCK_N, num_warps, num_stages): the winners of the sweep in
# benchmarks/prefill_attention.py on an H100 (2026-11-23, causal, N=4k, 16k tokens, block 16,
# after the unmasked off-diagonal tiles and the FMA-folded scale): dim 64 (9/3 heads) 327 TFLOP/s,
# dim 128 (32/8 heads) 402 TFLOP/s; 0.69-0.93x SDPA's default backend on S shapes, 0.57-0.75x on
# L, 1.0-1.5x its flash backend. See benchmarks/results/prefill_attention-h100.json.
PREFILL_CONFIGS = {
    64: (128, 128, 4, 3),
    128: (128, 64, 4, 4),
}
# The packed path (new tokens' K/V from the batch's packed tensors, TMA on Hopper): winners of the
# sweep on an H100 (2026-11-23, third session, causal, N=4k): dim 64 379 TFLOP/s, dim 128 481.
PACKED_CONFIGS = {
    64: (128, 64, 4, 3),
    128: (128, 128, 8, 3),
}
# Full (non-causal) attention, benchmarks only: dim 64 swept at N=4k/16k (fourth session, graph
# timing): (64, 128, 4, 3) 421-422 TFLOP/s = 0.90-0.91x SDPA default; the causal tiles 0.84-0.87x.
FULL_PACKED_CONFIGS = {
    64: (64, 128, 4, 3),
    128: (128, 128, 8, 3),
}
# Short prompts (max_q_len <= SHORT_Q_LEN): few key tiles per query tile, so smaller query tiles
# (more programs, two per SM) win. (head_dim, causal) -> config; winners of
# `prefill_attention.py --sweep-short` on an H100 (2026-11-23, fourth session, N=1k, CUDA-graph
# timing): dim 64 causal 291 TFLOP/s (0.95x SDPA default; the long tiles 0.86x), full 385
# (0.92x; 0.83x); dim 128 causal 359 (0.85x; 0.78x), full 473 (0.85x, the long tiles).
SHORT_Q_LEN = 2048
SHORT_PACKED_CONFIGS = {
    (64, True): (64, 64, 4, 3),
    (64, False): (128, 64, 8, 3),
    (128, True): (64, 64, 4, 3),
    (128, False): (128, 128, 8, 3),
}
FP32_CONFIG = (64, 64, 4, 2)   # float32 (exactness runs, not the fast path): fits every head dim
INTERPRET_CONFIG = (16, 16, 4, 1)  # the Triton interpreter (CPU): small tiles keep the tests fast


def choose_config(head_dim: int, causal: bool, packed: bool, max_q_len: int, element_size: int,
                  interpreting: bool) -> Config:
    """The tile configuration of one prefill launch (packed: the new tokens' K/V come packed)."""
    if interpreting:
        return INTERPRET_CONFIG
    if element_size > 2:    # float32 tiles take twice the shared memory of bf16 ones
        return FP32_CONFIG
    if packed and max_q_len <= SHORT_Q_LEN and (head_dim, causal) in SHORT_PACKED_CONFIGS:
        return SHORT_PACKED_CONFIGS[(head_dim, causal)]
    table = PREFILL_CONFIGS
    if packed:
        table = PACKED_CONFIGS if causal else FULL_PACKED_CONFIGS
    return table.get(head_dim, table[128])
