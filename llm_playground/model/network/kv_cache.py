"""The one KV storage: per layer, a pool of fixed-size physical blocks for K and for V.

Layout per layer: K and V each (num_blocks, block_size, num_kv_heads, head_dim), as the kernels
read them. Stored in the compute dtype (kv_dtype None / "auto"), or as 8-bit codes (kv_dtype
"int8" / "fp8", kernels/kv_quant.py) with one float16 scale per (token, KV head) beside them in
`k_scale` / `v_scale` pools of (num_blocks, block_size, num_kv_heads) per layer. This module only
allocates and sizes the pool; which block belongs to whom is the block manager's business
(model/engine/block_manager.py), and every attention path reads these tensors through block
tables. There is no other copy of the cache.
"""
from __future__ import annotations

import torch

# --kv-dtype values: "auto" = the compute dtype; int8 / fp8 = 8-bit codes + per-token scales
KV_DTYPES = ("auto", "int8", "fp8")


def kv_storage(dtype: torch.dtype, kv_dtype: str | None) -> tuple[torch.dtype, bool]:
    """(element dtype of the pools, quantised?) for compute `dtype` and `kv_dtype`."""
    if kv_dtype in (None, "auto"):
        return dtype, False
    from llm_playground.kernels.kv_quant import KV_CODE_DTYPES
    if kv_dtype not in KV_CODE_DTYPES:
        raise ValueError(f"unknown kv_dtype {kv_dtype!r}; choose one of {', '.join(KV_DTYPES)}")
    return KV_CODE_DTYPES[kv_dtype], True


def bytes_per_block(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                    block_size: int, kv_dtype: str | None = None) -> int:
    """2 (K and V) x layers x KV heads x (head dim x bytes per element [+ 2 bytes of scale when
    quantised]) x block size."""
    store, quantised = kv_storage(dtype, kv_dtype)
    elem = torch.empty((), dtype=store).element_size()
    return 2 * num_layers * num_kv_heads * (head_dim * elem + 2 * quantised) * block_size


class KVCache:
    """Paged K/V pools, each (layers, blocks, block size, KV heads, head dim); per-layer views
    (and per-layer scale views when quantised)."""
    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device | str,
                 kv_dtype: str | None = None) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"KV cache needs at least one block of at least one slot "
                             f"(got num_blocks={num_blocks}, block_size={block_size})")
        self.num_layers = num_layers
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype                         # the compute dtype K/V are written from
        self.kv_dtype = kv_dtype or "auto"
        self.storage_dtype, self.quantised = kv_storage(dtype, kv_dtype)
        self.device = torch.device(device)
        if self.kv_dtype == "fp8" and self.device.type == "cuda" and \
                torch.cuda.get_device_capability(self.device) < (8, 9):
            raise ValueError("kv_dtype fp8 needs a GPU with float8 (compute capability 8.9+); use int8")
        shape = (num_layers, num_blocks, block_size, num_kv_heads, head_dim)
        self.k_pool = torch.zeros(shape, dtype=self.storage_dtype, device=self.device)  # (L, NB, BS, Hkv, D)
        self.v_pool = torch.zeros(shape, dtype=self.storage_dtype, device=self.device)
        self.k = list(self.k_pool.unbind(0))  # per layer views (NB, BS, Hkv, D)
        self.v = list(self.v_pool.unbind(0))
        self.k_scale_pool = self.v_scale_pool = None
        self.k_scale: list[torch.Tensor] | None = None
        self.v_scale: list[torch.Tensor] | None = None
        if self.quantised:
            from llm_playground.kernels.kv_quant import SCALE_DTYPE
            self.k_scale_pool = torch.zeros(shape[:-1], dtype=SCALE_DTYPE, device=self.device)
            self.v_scale_pool = torch.zeros(shape[:-1], dtype=SCALE_DTYPE, device=self.device)
            self.k_scale = list(self.k_scale_pool.unbind(0))   # (NB, BS, Hkv) per layer
            self.v_scale = list(self.v_scale_pool.unbind(0))

    def scales(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(k_scale, v_scale) of `layer`, each (NB, BS, Hkv) float16; None when not quantised."""
        return (self.k_scale[layer], self.v_scale[layer]) if self.quantised else None

    def describe(self) -> str:
        """'bfloat16' or 'int8 + f16 scale per token' (for the header and the KV view)."""
        if not self.quantised:
            return str(self.dtype).removeprefix("torch.")
        return f"{self.kv_dtype} + f16 scale per token"

    @property
    def bytes_per_block(self) -> int:
        """Bytes one block takes in K and V over all layers."""
        return bytes_per_block(self.num_layers, self.num_kv_heads, self.head_dim, self.dtype,
                               self.block_size, self.kv_dtype)

    @property
    def total_bytes(self) -> int:
        """Bytes of the whole pool, K and V."""
        return self.bytes_per_block * self.num_blocks

    def copy_block(self, src: int, dst: int) -> None:
        """Copy-on-write: duplicate one physical block's K and V (and scales) in every layer."""
        self.k_pool[:, dst].copy_(self.k_pool[:, src])
        self.v_pool[:, dst].copy_(self.v_pool[:, src])
        if self.quantised:
            self.k_scale_pool[:, dst].copy_(self.k_scale_pool[:, src])
            self.v_scale_pool[:, dst].copy_(self.v_scale_pool[:, src])

    @staticmethod
    def num_blocks_for_budget(budget_bytes: int, num_layers: int, num_kv_heads: int, head_dim: int,
                              dtype: torch.dtype, block_size: int, kv_dtype: str | None = None) -> int:
        """Blocks that fit in `budget_bytes` (at least 1)."""
        per = bytes_per_block(num_layers, num_kv_heads, head_dim, dtype, block_size, kv_dtype)
        return max(1, budget_bytes // per)
