"""The one KV storage: per layer, a pool of fixed-size physical blocks for K and for V.

Layout per layer: K and V each (num_blocks, block_size, num_kv_heads, head_dim), as the kernels
read them. This module only allocates and sizes the pool; which block belongs to whom is the
block manager's business (model/engine/block_manager.py), and every attention path reads these tensors
through block tables. There is no other copy of the cache.
"""
from __future__ import annotations

import torch


def bytes_per_block(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                    block_size: int) -> int:
    """2 (K and V) x layers x KV heads x head dim x bytes per element x block size."""
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * num_layers * num_kv_heads * head_dim * elem * block_size


class KVCache:
    """Paged K/V pools, each (layers, blocks, block size, KV heads, head dim); per-layer views."""
    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"KV cache needs at least one block of at least one slot "
                             f"(got num_blocks={num_blocks}, block_size={block_size})")
        self.num_layers = num_layers
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        shape = (num_layers, num_blocks, block_size, num_kv_heads, head_dim)
        self.k_pool = torch.zeros(shape, dtype=dtype, device=self.device)  # (L, NB, BS, Hkv, D)
        self.v_pool = torch.zeros(shape, dtype=dtype, device=self.device)
        self.k = list(self.k_pool.unbind(0))  # per layer views (NB, BS, Hkv, D)
        self.v = list(self.v_pool.unbind(0))

    @property
    def bytes_per_block(self) -> int:
        """Bytes one block takes in K and V over all layers."""
        return bytes_per_block(self.num_layers, self.num_kv_heads, self.head_dim, self.dtype,
                               self.block_size)

    @property
    def total_bytes(self) -> int:
        """Bytes of the whole pool, K and V."""
        return self.bytes_per_block * self.num_blocks

    def copy_block(self, src: int, dst: int) -> None:
        """Copy-on-write: duplicate one physical block's K and V in every layer."""
        self.k_pool[:, dst].copy_(self.k_pool[:, src])
        self.v_pool[:, dst].copy_(self.v_pool[:, src])

    @staticmethod
    def num_blocks_for_budget(budget_bytes: int, num_layers: int, num_kv_heads: int, head_dim: int,
                              dtype: torch.dtype, block_size: int) -> int:
        """Blocks that fit in `budget_bytes` (at least 1)."""
        per = bytes_per_block(num_layers, num_kv_heads, head_dim, dtype, block_size)
        return max(1, budget_bytes // per)
