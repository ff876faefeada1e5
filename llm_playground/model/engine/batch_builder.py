"""Pack one step's scheduled sequences into a `BatchPlan`: numpy arrays, no tensors.

The engine (model/engine/engine.py) calls `plan_batch` once per distinct attention mask in a
step, with the sequences the scheduler chose (decodes first, then prefill chunks). For each it
takes the new token ids `all_ids[start:end]`, their RoPE positions (shifted back by the evicted
span for sliding patterns, model/engine/eviction.py), their cache slots and the block table;
tables are padded with -1 to the widest. A decode of a token still on its way from the device
(overlap scheduling: `seq.num_pending`) gets id 0 and a deferred entry naming the previous
step's draw `seq.pending_draw`. The layout is the one model/engine/step_plan.py documents; the model runner moves it to the device (model/engine/device_batch.py).
This module does not schedule, allocate blocks, touch tensors or run the model.
"""
from __future__ import annotations

import numpy as np

from llm_playground.model.engine import eviction
from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.scheduler import ScheduledSeq
from llm_playground.model.engine.step_plan import BatchPlan, LogitsRequest


def plan_batch(items: list[ScheduledSeq], spec, bm: BlockManager,
               logits: list[LogitsRequest]) -> BatchPlan:
    """The `BatchPlan` of `items`, all under mask `spec`; `logits` has one entry per item that
    needs logits, in order (what to sample from its row)."""
    ids, positions, slots, cu, ctx, logit_rows = [], [], [], [0], [], []
    deferred, deferred_draws = [], []
    bs = bm.block_size
    width = 0
    for it in items:
        seq = it.seq
        table = bm.table(seq.seq_id)
        width = max(width, len(table))
        start, end = it.start, it.end
        known = len(seq.prompt_ids) + len(seq.output_ids)
        if end > known:                  # its one token is still on the device (overlap)
            assert end - start == 1 and seq.num_pending == 1, "only a decode can wait for its id"
            deferred.append(len(ids))
            deferred_draws.append(seq.pending_draw)
            ids.append(0)
            offset = eviction.rope_offset(table, start, bs) if seq.pattern.evicts else 0
            positions.append(start - offset)
            slots.append(table[start // bs] * bs + start % bs)
        elif end - start == 1 and not seq.pattern.evicts:       # a decode: one token, no shift
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
    B = len(items)
    tables = bm.table_rows([it.seq.seq_id for it in items], width)                  # (B, W)
    return BatchPlan(
        mask=spec, input_ids=np.asarray(ids, dtype=np.int64),                      # (T,)
        positions=np.asarray(positions, dtype=np.int64),                          # (T,)
        slot_mapping=np.asarray(slots, dtype=np.int64),                           # (T,)
        cu_seqlens_q=np.asarray(cu, dtype=np.int32),                              # (B + 1,)
        context_lens=np.asarray(ctx, dtype=np.int32),                             # (B,)
        block_tables=tables.reshape(B, width),                                    # (B, W)
        logits_rows=np.asarray(logit_rows, dtype=np.int64), logits=logits,        # (N,)
        num_decodes=sum(1 for it in items if it.num_tokens == 1),
        max_q_len=max(it.num_tokens for it in items), max_context_len=max(ctx),
        has_holes=any(bm.num_holes(it.seq.seq_id) for it in items),
        has_prefix=any(it.start > 0 for it in items if it.num_tokens > 1),
        deferred_tokens=np.asarray(deferred, dtype=np.int64),                     # (P,)
        deferred_draws=np.asarray(deferred_draws, dtype=np.int64))                # (P,)
