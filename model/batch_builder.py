"""Pack one step's scheduled sequences into an `AttentionBatch` and its input ids.

The engine (model/engine.py) calls `build_batch` once per distinct attention mask in a step, with
the sequences the scheduler chose (decodes first, then prefill chunks). For each it takes the new
token ids `all_ids[start:end]`, their RoPE positions (shifted back by the evicted span for sliding
patterns, model/streaming.py), their cache slots and the block table; tables are padded with -1
to the widest. The layout is the one model/batch.py documents.
This module does not schedule, allocate blocks, or run the model.
"""
from __future__ import annotations

import torch

from model import streaming
from model.batch import AttentionBatch
from model.block_manager import BlockManager
from model.scheduler import ScheduledSeq


def build_batch(items: list[ScheduledSeq], spec, bm: BlockManager,
                device: torch.device) -> tuple[AttentionBatch, torch.Tensor]:
    """(AttentionBatch, input ids (T,) int64) for `items`, all under mask `spec`."""
    ids, positions, slots, cu, ctx, tables, logit_rows = [], [], [], [0], [], [], []
    bs = bm.block_size
    for it in items:
        seq = it.seq
        table = bm.table(seq.seq_id)
        offset = streaming.rope_offset(table, it.start, bs) if seq.pattern.evicts else 0
        ids += seq.token_slice(it.start, it.end)
        positions += range(it.start - offset, it.end - offset)
        slots += bm.slot_mapping(seq.seq_id, it.start, it.end)
        cu.append(cu[-1] + it.num_tokens)
        ctx.append(it.end)
        tables.append(table)
        if it.needs_logits:
            logit_rows.append(cu[-1] - 1)
    width = max(len(t) for t in tables)
    as_t = lambda x, dt: torch.tensor(x, dtype=dt, device=device)  # noqa: E731
    batch = AttentionBatch(
        positions=as_t(positions, torch.int64),                                     # (T,)
        slot_mapping=as_t(slots, torch.int64),                                      # (T,)
        cu_seqlens_q=as_t(cu, torch.int32),                                         # (B + 1,)
        context_lens=as_t(ctx, torch.int32),                                        # (B,)
        block_tables=as_t([t + [-1] * (width - len(t)) for t in tables], torch.int32),  # (B, W)
        max_q_len=max(it.num_tokens for it in items), max_context_len=max(ctx), mask=spec,
        num_decodes=sum(1 for it in items if it.num_tokens == 1),
        logits_indices=as_t(logit_rows, torch.int64),                               # (N,)
        has_holes=any(bm.num_holes(it.seq.seq_id) for it in items),
        has_prefix=any(it.start > 0 for it in items if it.num_tokens > 1))
    return batch, as_t(ids, torch.int64)                                            # (T,)
