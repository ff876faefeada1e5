"""Move a `BatchPlan` (numpy, host) to the device as an `AttentionBatch` and its input ids.

Runner side of the seam (model/engine/step_plan.py): two host-to-device copies per batch (all
int64 fields in one, all int32 fields in the other) instead of one per field, because each copy
costs tens of microseconds of host time, per step. On CUDA they go from pinned memory without
blocking, so the host never waits here for the device's previous step. Deferred input ids
(overlap scheduling) are filled on the device from the previous step's draws. Each part starts at a
16-byte boundary, which the kernels' pointer specialisation and vector loads prefer.
This module does not decide what runs; it only packs and copies.
"""
from __future__ import annotations

import numpy as np
import torch

from llm_playground.model.engine.step_plan import BatchPlan
from llm_playground.model.network.batch import AttentionBatch


def to_device(plan: BatchPlan, device: torch.device,
              prev_ids: torch.Tensor | None = None) -> tuple[AttentionBatch, torch.Tensor]:
    """(AttentionBatch, input ids (T,) int64) on `device` for one batch plan. `prev_ids` (D,)
    on `device`: the previous step's draws, which fill the plan's deferred input ids there."""
    B, T = plan.num_rows, plan.num_tokens
    W = plan.block_tables.shape[1]
    N = len(plan.logits_rows)
    P = len(plan.deferred_tokens)
    t64, o64 = _pack([plan.positions, plan.slot_mapping, plan.logits_rows, plan.input_ids,
                      plan.deferred_tokens, plan.deferred_draws],
                     np.int64, 2, device)                                          # 2 x 8 = 16 B
    t32, o32 = _pack([plan.cu_seqlens_q, plan.context_lens, plan.block_tables.reshape(-1)],
                     np.int32, 4, device)                                          # 4 x 4 = 16 B
    batch = AttentionBatch(
        positions=t64[o64[0]:o64[0] + T],                                           # (T,)
        slot_mapping=t64[o64[1]:o64[1] + T],                                        # (T,)
        cu_seqlens_q=t32[o32[0]:o32[0] + B + 1],                                    # (B + 1,)
        context_lens=t32[o32[1]:o32[1] + B],                                        # (B,)
        block_tables=t32[o32[2]:o32[2] + B * W].view(B, W),                         # (B, W)
        max_q_len=plan.max_q_len, max_context_len=plan.max_context_len, mask=plan.mask,
        num_decodes=plan.num_decodes,
        logits_indices=t64[o64[2]:o64[2] + N],                                      # (N,)
        has_holes=plan.has_holes, has_prefix=plan.has_prefix)
    ids = t64[o64[3]:o64[3] + T]                                                    # (T,)
    if P:
        if prev_ids is None:
            raise RuntimeError("a batch plan names the previous step's draws, but no step was "
                               "submitted before it")
        where, draws = t64[o64[4]:o64[4] + P], t64[o64[5]:o64[5] + P]                  # (P,)
        ids.index_copy_(0, where, prev_ids.index_select(0, draws))                  # on device
    return batch, ids


def host_to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host list as a tensor on `device`: on CUDA through pinned memory, non-blocking
    (a pageable copy would wait for every kernel queued before it); elsewhere a plain tensor."""
    t = torch.tensor(values, dtype=dtype)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def _pack(parts: list, dtype, align: int, device: torch.device) -> tuple[torch.Tensor, list[int]]:
    """One tensor on `device` holding the parts (arrays of ints) end to end, each starting at a
    multiple of `align` elements; returns (tensor, start of each part)."""
    offsets, n = [], 0
    for part in parts:
        n += -n % align
        offsets.append(n)
        n += len(part)
    flat = np.zeros(n, dtype=dtype)
    for part, start in zip(parts, offsets):
        flat[start:start + len(part)] = part
    t = torch.from_numpy(flat)
    if torch.device(device).type == "cuda":
        # Pinned + non-blocking: a pageable copy waits for every kernel queued before it, which
        # would stall the host on the previous step (overlap scheduling). The caching host
        # allocator keeps the pinned block until the copy has run.
        return t.pin_memory().to(device, non_blocking=True), offsets
    return t, offsets
