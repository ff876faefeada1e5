"""Pack one step's scheduled sequences into an `AttentionBatch` and its input ids.

The engine (model/engine/engine.py) calls `build_batch` once per distinct attention mask in a step, with
the sequences the scheduler chose (decodes first, then prefill chunks). For each it takes the new
token ids `all_ids[start:end]`, their RoPE positions (shifted back by the evicted span for sliding
patterns, model/engine/eviction.py), their cache slots and the block table; tables are padded with -1
to the widest. The layout is the one model/network/batch.py documents.
This module does not schedule, allocate blocks, or run the model.
"""
from __future__ import annotations

import numpy as np
import torch

from llm_playground.model.engine import eviction
from llm_playground.model.network.batch import AttentionBatch
from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.scheduler import ScheduledSeq


def build_batch(items: list[ScheduledSeq], spec, bm: BlockManager,
                device: torch.device) -> tuple[AttentionBatch, torch.Tensor]:
    """(AttentionBatch, input ids (T,) int64) for `items`, all under mask `spec`."""
    ids, positions, slots, cu, ctx, logit_rows = [], [], [], [0], [], []
    bs = bm.block_size
    width = 0
    for it in items:
        seq = it.seq
        table = bm.table(seq.seq_id)
        width = max(width, len(table))
        start, end = it.start, it.end
        if end - start == 1 and not seq.pattern.evicts:       # a decode: one token, no shift
            p = len(seq.prompt_ids)
            ids.append(seq.prompt_ids[start] if start < p else seq.output_ids[start - p])
            positions.append(start)
            slots.append(table[start // bs] * bs + start % bs)
        else:
            offset = eviction.rope_offset(table, start, bs) if seq.pattern.evicts else 0
            ids += seq.token_slice(start, end)
            positions += range(start - offset, end - offset)
            slots += bm.slot_mapping(seq.seq_id, start, end)
        cu.append(cu[-1] + it.num_tokens)
        ctx.append(end)
        if it.needs_logits:
            logit_rows.append(cu[-1] - 1)
    B, T = len(items), len(ids)
    tables = bm.table_rows([it.seq.seq_id for it in items], width)                  # (B, W)
    # Two host->device copies (int64 fields, int32 fields) instead of one per field: each copy
    # from pageable memory costs tens of microseconds of host time, per step.
    t64, o64 = _pack([positions, slots, logit_rows, ids], np.int64, 2, device)  # 2 x 8 = 16 B
    t32, o32 = _pack([cu, ctx, tables.reshape(-1)], np.int32, 4, device)       # 4 x 4 = 16 B
    batch = AttentionBatch(
        positions=t64[o64[0]:o64[0] + T],                                           # (T,)
        slot_mapping=t64[o64[1]:o64[1] + T],                                        # (T,)
        cu_seqlens_q=t32[o32[0]:o32[0] + B + 1],                                    # (B + 1,)
        context_lens=t32[o32[1]:o32[1] + B],                                        # (B,)
        block_tables=t32[o32[2]:o32[2] + B * width].view(B, width),                 # (B, W)
        max_q_len=max(it.num_tokens for it in items), max_context_len=max(ctx), mask=spec,
        num_decodes=sum(1 for it in items if it.num_tokens == 1),
        logits_indices=t64[o64[2]:o64[2] + len(logit_rows)],                        # (N,)
        has_holes=any(bm.num_holes(it.seq.seq_id) for it in items),
        has_prefix=any(it.start > 0 for it in items if it.num_tokens > 1))
    return batch, t64[o64[3]:o64[3] + T]                                            # (T,) ids


def _pack(parts: list, dtype, align: int, device: torch.device) -> tuple[torch.Tensor, list[int]]:
    """One tensor on `device` holding the parts (lists or arrays of ints) end to end, each
    starting at a multiple of `align` elements (16-byte aligned views, which the kernels' pointer
    specialisation and vector loads prefer); returns (tensor, start of each part)."""
    offsets, n = [], 0
    for part in parts:
        n += -n % align
        offsets.append(n)
        n += len(part)
    flat = np.zeros(n, dtype=dtype)
    for part, start in zip(parts, offsets):
        flat[start:start + len(part)] = part
    return torch.from_numpy(flat).to(device), offsets
