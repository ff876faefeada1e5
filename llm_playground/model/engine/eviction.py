"""Eviction and re-rotation for sliding patterns (StreamingLLM streaming:S,W and local:W).

Keys are cached AFTER RoPE. When a block falls wholly out of reach (model/engine/attention_patterns.py
`freeable_blocks`: past the window, no sink in it) the engine frees it and leaves a -1 hole in the
block table; logical numbering does not change, so the mask (kernels/mask.py) still works on
logical positions. RoPE positions, in contrast, are positions *inside the cache*, as StreamingLLM
assigns them: with E tokens evicted, a new token at logical position p gets RoPE position p - E,
and every kept non-sink key at logical j must sit at j - E. Evicting one more block of BS tokens
therefore re-rotates the kept keys after it by -BS, in place: R(p - BS) k = R(-BS) (R(p) k).
Each key is re-rotated about window / BS times in its life (float32 arithmetic, cast back), which
is cheaper than rotating every cached key at every attention call. Sinks and the keys that share
their block are never shifted (the non-sink ones there are masked once out of the window anyway).

What the engine does per sequence with an evicting pattern (see `plan_eviction`):
  before a step:  positions of the new tokens = logical - rope_offset(table, num_cached, BS)
  after a step:   plan = plan_eviction(pattern.spec, table, num_cached, BS)
                  free plan.freed (physical ids), set table[i] = -1 for i in plan.freed_logical,
                  for delta, ids in plan.rerotate: rerotate_keys(kv, ids, delta, cos, sin)
Blocks to re-rotate must not be shared with a sequence that does not evict alongside (copy them
first), and once re-rotated they no longer match a prefix-cache hash built from token ids alone.

This module does not decide what to free (model/engine/attention_patterns.py does) and does not own the block
manager or the allocator (model/engine/block_manager.py, model/engine/engine.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from llm_playground.kernels.mask import MaskSpec
from llm_playground.model.engine.attention_patterns import freeable_blocks


def rope_offset(block_table: Sequence[int], num_tokens: int, block_size: int) -> int:
    """Tokens evicted from a sequence of num_tokens: holes (-1) among its first ceil(n / BS) blocks x BS.

    Holes are always full blocks (only full blocks fall out of reach), so this is exact. New tokens
    get RoPE position logical - rope_offset.
    """
    n_blocks = -(-num_tokens // block_size)
    return sum(1 for b in block_table[:n_blocks] if b < 0) * block_size


@dataclass
class EvictionPlan:
    """What a sliding pattern evicts: logical holes, the physical blocks to free, and the blocks
    whose keys need re-rotating (by how many positions)."""
    freed_logical: list[int] = field(default_factory=list)   # logical indices that become holes
    freed: list[int] = field(default_factory=list)           # their physical block ids (to free)
    rerotate: list[tuple[int, list[int]]] = field(default_factory=list)  # (delta, physical ids)

    @property
    def empty(self) -> bool:
        """True when nothing is evicted."""
        return not self.freed_logical


def plan_eviction(spec: MaskSpec, block_table: Sequence[int], num_tokens: int,
                  block_size: int) -> EvictionPlan:
    """What to free and re-rotate now that num_tokens tokens of this sequence are in the cache.

    Pure bookkeeping on a list of physical ids (-1 = hole); changes nothing. A kept key whose block
    lies after k newly freed blocks moves by delta = -k * BS. Blocks at or past ceil(n / BS) are
    not touched (not yet allocated, or preallocated and empty).
    """
    n_blocks = -(-num_tokens // block_size)
    reach = freeable_blocks(spec, num_tokens, block_size)
    newly = [i for i in reach if i < len(block_table) and block_table[i] >= 0]
    plan = EvictionPlan(freed_logical=newly, freed=[block_table[i] for i in newly])
    if not newly:
        return plan
    groups: dict[int, list[int]] = {}
    freed_before = 0
    newly_set = set(newly)
    for i in range(min(n_blocks, len(block_table))):
        if i in newly_set:
            freed_before += 1
        elif block_table[i] >= 0 and freed_before:
            groups.setdefault(-freed_before * block_size, []).append(block_table[i])
    plan.rerotate = sorted(groups.items())
    return plan


def rerotate_keys(kv, block_ids: Sequence[int], delta: int, cos: torch.Tensor, sin: torch.Tensor,
                  layer: int | None = None) -> None:
    """Rotate the cached keys of the given physical blocks by `delta` positions, in place.

    kv: a KVCache (k[l] is (NB, BS, Hkv, D)); cos, sin: (max_pos, D/2) float32 RoPE tables in the
    rotate-half layout (kernels.reference.rope_ref), |delta| < max_pos. layer None = every layer.
    Duplicate ids are rotated once. Works on CPU and CUDA tensors; values are left untouched.
    An 8-bit cache (kv.quantised) is dequantised, rotated in float32 and requantised.
    """
    ids = sorted(set(int(b) for b in block_ids))
    if not ids or delta == 0:
        return
    if ids[0] < 0:
        raise ValueError(f"rerotate_keys got a hole or negative block id: {ids[0]}")
    if abs(delta) >= cos.shape[0]:
        raise ValueError(f"rerotate_keys: |delta| = {abs(delta)} is past the RoPE table ({cos.shape[0]})")
    layers = range(len(kv.k)) if layer is None else [layer]
    work = torch.promote_types(kv.k[0].dtype, torch.float32)       # float32, or float64 caches
    c = cos[abs(delta)].to(kv.k[0].device, work)                                  # (D/2,)
    s = sin[abs(delta)].to(kv.k[0].device, work) * (1 if delta > 0 else -1)      # sin(-x) = -sin(x)
    from llm_playground.model.engine.device_batch import host_to_device   # runner side only
    idx = host_to_device(ids, torch.long, kv.k[0].device)                       # (nb,) no sync
    quantised = getattr(kv, "quantised", False)                  # 8-bit codes + scales
    if quantised:
        from llm_playground.kernels.kv_quant import dequantize_kv, quantize_kv
        work = torch.float32
    for layer_id in layers:
        k_cache = kv.k[layer_id]                                  # (NB, BS, Hkv, D)
        if quantised:                                             # dequantise, rotate, requantise
            k_scale = kv.k_scale[layer_id]                        # (NB, BS, Hkv)
            k = dequantize_kv(k_cache.index_select(0, idx), k_scale.index_select(0, idx), work)
        else:
            k = k_cache.index_select(0, idx).to(work)              # (nb, BS, Hkv, D)
        x1, x2 = k.chunk(2, dim=-1)                               # (nb, BS, Hkv, D/2) each
        rotated = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)
        if quantised:
            codes, scales = quantize_kv(rotated, k_cache.dtype)
            k_cache.view(torch.uint8).index_copy_(0, idx, codes.view(torch.uint8))
            k_scale.index_copy_(0, idx, scales)
        else:
            k_cache.index_copy_(0, idx, rotated.to(k_cache.dtype))
