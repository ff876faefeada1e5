"""Test helper: hand-built AttentionBatch / KVCache with shuffled, non-contiguous blocks.

A stand-in for the engine's block manager, small enough to trust by reading: each sequence gets
physical blocks popped from a shuffled free list as it grows, so block tables are scattered and
paging is really exercised. Used by the model oracle tests; not product code.
"""
from __future__ import annotations

import random

import torch

from llm_playground.model.network.batch import AttentionBatch
from llm_playground.model.network.config import ModelConfig
from llm_playground.model.network.kv_cache import KVCache


class Pager:
    def __init__(self, cfg: ModelConfig, num_blocks: int, block_size: int, dtype=torch.float32,
                 seed: int = 0, device: str = "cpu") -> None:
        self.block_size = block_size
        self.device = device
        self.kv = KVCache(cfg.num_layers, num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim,
                          dtype, device)
        self.free = list(range(num_blocks))
        random.Random(seed).shuffle(self.free)
        self.tables: dict[int, list[int]] = {}
        self.lens: dict[int, int] = {}

    def batch(self, steps: list[tuple[int, int]]) -> AttentionBatch:
        """steps: (sequence id, new tokens) in batch order (decodes first); grows each sequence."""
        positions, slots, cu, ctx, tables = [], [], [0], [], []
        num_decodes = 0
        for i, (sid, q_len) in enumerate(steps):
            table = self.tables.setdefault(sid, [])
            start = self.lens.get(sid, 0)
            end = start + q_len
            while len(table) * self.block_size < end:
                table.append(self.free.pop())
            for p in range(start, end):
                positions.append(p)
                slots.append(table[p // self.block_size] * self.block_size + p % self.block_size)
            self.lens[sid] = end
            cu.append(cu[-1] + q_len)
            ctx.append(end)
            tables.append(table)
            if q_len == 1 and num_decodes == i:
                num_decodes += 1
        width = max(len(t) for t in tables)
        bt = torch.full((len(tables), width), -1, dtype=torch.int32)
        for b, t in enumerate(tables):
            bt[b, :len(t)] = torch.tensor(t, dtype=torch.int32)
        q_lens = [q for _, q in steps]
        d = self.device
        return AttentionBatch(
            positions=torch.tensor(positions, dtype=torch.int64, device=d),
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=d),
            cu_seqlens_q=torch.tensor(cu, dtype=torch.int32, device=d),
            context_lens=torch.tensor(ctx, dtype=torch.int32, device=d),
            block_tables=bt.to(d), max_q_len=max(q_lens), max_context_len=max(ctx),
            num_decodes=num_decodes)


def last_token_rows(steps: list[tuple[int, int]]) -> torch.Tensor:
    """Row index of each sequence's last new token in the packed batch."""
    rows, total = [], 0
    for _, q_len in steps:
        total += q_len
        rows.append(total - 1)
    return torch.tensor(rows)
