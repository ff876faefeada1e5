"""Pack one step's scheduled sequences into a `BatchPlan`: numpy arrays, no tensors.

The engine (model/engine/engine.py) calls `plan_batch` once per distinct attention mask in a
step, with the sequences the scheduler chose (decodes first, then prefill chunks). For each it
takes the new token ids `all_ids[start:end]`, where they start, the sequence's row of the
persistent block table (the runner keeps the tables on the device and gets only the rows that
changed, StepPlan.table_rows) and, for sliding patterns, how far the RoPE positions shift back
for the evicted span (model/engine/eviction.py). Positions, slots and the batch's tables are
derived from those on the device (model/engine/device_batch.py): nothing here walks a block
table. A decode of a token still on its way from the device (overlap scheduling:
`seq.num_pending`) gets id 0 and a deferred entry naming the previous step's draw
`seq.pending_draw`. A speculative verification (`ScheduledSeq.spec`, model/engine/
spec_planner.py) is a row of 1 + k tokens, the last accepted id and the k proposals (0 where the
runner's draft model fills them in), with k + 1 logits rows and a `Verify` on its
LogitsRequest; verify rows follow the decodes, and the first run of them with one length is
named for the attention kernels (`num_verify`, `verify_q_len`). A decode whose draft model
only catches up this step (`ScheduledSeq.catchup`) adds a `DraftCatchup` of those ids. The
layout is the one model/engine/step_plan.py documents.
This module does not schedule, allocate blocks, touch tensors or run the model.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from llm_playground.model.engine import eviction
from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.scheduler import ScheduledSeq
from llm_playground.model.engine.step_plan import BatchPlan, DraftCatchup, LogitsRequest, Verify


def group_by_mask(items: list[ScheduledSeq]) -> dict:
    """The step's items per attention mask (MaskSpec), in order of first appearance: one batch
    plan each. One mask (the common case) is found by identity, without hashing per item."""
    if not items:
        return {}
    first = items[0].seq.pattern.spec
    for it in items:
        if it.seq.pattern.spec is not first:
            break
    else:
        return {first: items}
    by_mask: dict = {}
    for it in items:
        by_mask.setdefault(it.seq.pattern.spec, []).append(it)
    return by_mask


def plan_batch(items: list[ScheduledSeq], spec, bm: BlockManager,
               logits: list[LogitsRequest]) -> BatchPlan:
    """The `BatchPlan` of `items`, all under mask `spec`; `logits` has one entry per item that
    needs logits, in order (what to sample from its row)."""
    ids, rows, starts, cu, logit_rows = [], [], [], [], []
    offsets = None             # per row its RoPE offset, once a row evicts (else all 0)
    deferred, deferred_draws, catchups = [], [], []
    # The leading rows that are plain decodes (one token, its logits, no verify) have
    # cu_seqlens_q and logits rows 0, 1, 2, ...: counted, not appended; `cu` and `logit_rows`
    # hold the rest's entries, t the tokens so far.
    lead = t = 0
    leading = True
    # seq id -> table / mirror row: the block manager's dicts, read by subscript (no call)
    bs, tables, row_of = bm.block_size, bm.tables_by_seq, bm.rows_by_seq
    width = max_ctx = max_q = 0
    num_decodes = 0
    has_holes = has_prefix = has_offsets = False
    num_verify = verify_q_len = 0
    verifying = True           # still in the first run of verify rows of one length
    j = 0                      # the next LogitsRequest
    for it in items:
        seq = it.seq
        sid = seq.seq_id
        table = tables[sid]
        if len(table) > width:
            width = len(table)
        start, end, n = it.start, it.end, it.num_tokens
        rows.append(row_of[sid])
        starts.append(start)
        if seq.pattern.evicts:
            offset = eviction.rope_offset(table, start, bs)
            has_offsets = has_offsets or offset != 0
            has_holes = has_holes or bm.num_holes(sid) > 0
            offsets = [0] * (len(rows) - 1) if offsets is None else offsets
            offsets.append(offset)
        elif offsets is not None:
            offsets.append(0)
        if n == 1 and it.needs_logits and it.spec is None and it.catchup is None:
            # A decode of the sequence's last token (most rows): no lengths needed; a row with
            # a verify or a draft catch-up takes the general path below.
            if seq.num_pending:        # its one token is still on the device (overlap)
                assert seq.num_pending == 1, "only a decode can wait for its id"
                deferred.append(len(ids))
                deferred_draws.append(seq.pending_draw)
                ids.append(0)
            else:
                out = seq.output_ids
                ids.append(out[-1] if out else seq.prompt_ids[-1])
            num_decodes += 1
            max_q = max_q or 1
            if end > max_ctx:
                max_ctx = end
            t += 1
            if leading:
                lead += 1
            else:
                cu.append(t)
                logit_rows.append(t - 1)
            j += 1
            continue
        leading = False
        p = len(seq.prompt_ids)
        if it.catchup is not None:
            c_start, c_n = it.catchup
            catchups.append(DraftCatchup(len(rows) - 1, c_start,
                                         tuple(seq.token_slice(c_start, c_start + c_n))))
        if it.spec is not None:
            k, proposals = it.spec
            ids.append(seq.output_ids[start - p] if start >= p else seq.prompt_ids[start])
            ids += proposals if proposals else [0] * k
            has_prefix = has_prefix or start > 0
            if verifying and n > 1 and (num_verify == 0 or n == verify_q_len) \
                    and len(rows) - 1 == num_decodes + num_verify:
                num_verify, verify_q_len = num_verify + 1, n
            else:
                verifying = False
            draft_start = min(seq.draft_computed, start)
            # a new request, never the group's own (a steady row's request is shared by steps)
            logits[j] = replace(logits[j], verify=Verify(
                row=len(rows) - 1, k=k, proposals=tuple(proposals), draft_start=draft_start,
                catchup_ids=() if proposals else tuple(seq.token_slice(draft_start, start + 1))))
        elif end > p + len(seq.output_ids):    # its one token is still on the device (overlap)
            assert n == 1 and seq.num_pending == 1, "only a decode can wait for its id"
            deferred.append(len(ids))
            deferred_draws.append(seq.pending_draw)
            ids.append(0)
        elif n == 1:
            ids.append(seq.prompt_ids[start] if start < p else seq.output_ids[start - p])
        else:
            ids += seq.token_slice(start, end)
            has_prefix = has_prefix or start > 0
        if n == 1 and it.spec is None:
            num_decodes += 1
        elif it.spec is None and n > 1 and num_verify:
            verifying = False
        if n > max_q:
            max_q = n
        if end > max_ctx:
            max_ctx = end
        t += n
        cu.append(t)
        if it.spec is not None:
            logit_rows += range(t - n, t)
            j += 1
        elif it.needs_logits:
            logit_rows.append(t - 1)
            j += 1
    return BatchPlan(
        mask=spec, input_ids=np.asarray(ids, dtype=np.int64),                      # (T,)
        seq_rows=np.asarray(rows, dtype=np.int32),                                # (B,)
        starts=np.asarray(starts, dtype=np.int32),                                # (B,)
        cu_seqlens_q=np.asarray([*range(lead + 1), *cu], dtype=np.int32),         # (B + 1,)
        rope_offsets=(np.zeros(len(rows), dtype=np.int32) if offsets is None      # (B,)
                      else np.asarray(offsets, dtype=np.int32)),
        logits_rows=np.asarray([*range(lead), *logit_rows], dtype=np.int64),      # (N,)
        logits=logits,
        num_decodes=num_decodes, max_q_len=max_q, max_context_len=max_ctx,
        table_width=width, has_holes=has_holes, has_prefix=has_prefix,
        has_offsets=has_offsets, num_verify=num_verify, verify_q_len=verify_q_len,
        draft_catchups=catchups,
        deferred_tokens=np.asarray(deferred, dtype=np.int64),                     # (P,)
        deferred_draws=np.asarray(deferred_draws, dtype=np.int64))                # (P,)
