"""The persistent device-resident batch: block tables kept on the device, batches derived there.

Runner side of the seam (model/engine/step_plan.py). `DeviceBatch` owns an int32 (R, W) table
on the runner's device, one row per live sequence, mirroring the engine's numpy mirror
(model/engine/table_rows.py) row for row. Each step it writes only the rows the plan says
changed (`apply_table_updates`: a sequence admitted or forked, one block appended, a block
copied on write or freed to a hole), then `build` turns each `BatchPlan` into the
`AttentionBatch` the network reads, on the device:
    q_len[b]    = cu_seqlens_q[b+1] - cu_seqlens_q[b];  context_lens = starts + q_len
    token t of row b: position p = starts[b] + t, RoPE position p - rope_offsets[b]
    slot        = table[seq_rows[b], p // block_size] * block_size + p % block_size
    tables      = table[seq_rows, :table_width]                                     (B, W)
so the host sends per batch the new token ids and a few ints per row, never positions, slots or
tables rebuilt from Python lists (vLLM's model runner V2 keeps its block tables and computes
slot mappings on the GPU the same way). Deferred input ids (overlap scheduling) are filled here
from the previous step's draws. Per batch the host makes two copies (int64 and int32 parts
packed, each part 16-byte aligned, which the kernels' pointer specialisation prefers); on CUDA
they come from pinned memory without blocking, so the host never waits for the previous step.
`host_to_device` and `to_pinned` are the small host <-> device copies the runner makes around a
step (through pinned memory on CUDA, without blocking).
This module does not decide what runs; it only keeps the tables and derives.
"""
from __future__ import annotations

import numpy as np
import torch

from llm_playground.model.engine.step_plan import BatchPlan
from llm_playground.model.network.batch import AttentionBatch


class DeviceBatch:
    """The block tables of the live sequences on `device`, and the per-batch derivation."""

    def __init__(self, device: torch.device, block_size: int, rows: int = 64,
                 width: int = 64) -> None:
        self.device = torch.device(device)
        self.block_size = block_size
        self.tables = torch.full((rows, width), -1, dtype=torch.int32, device=self.device)  # (R, W)

    def apply_table_updates(self, rows: np.ndarray, data: np.ndarray) -> None:
        """Rows `rows` (K,) of the table are now `data` (K, W'), whole (-1 past their end)."""
        K = len(rows)
        if K == 0:
            return
        W = data.shape[1]
        R = int(rows.max()) + 1
        if R > self.tables.shape[0] or W > self.tables.shape[1]:
            self._grow(R, W)
        data_t = _host(np.ascontiguousarray(data, dtype=np.int32), self.device)         # (K, W')
        rows_t = _host(rows.astype(np.int64), self.device)                              # (K,)
        if W < self.tables.shape[1]:
            # Columns past the mirror's width are -1 in the mirror: clear them here too.
            self.tables.index_fill_(0, rows_t, -1)
            self.tables[:, :W].index_copy_(0, rows_t, data_t)
        else:
            self.tables.index_copy_(0, rows_t, data_t)

    def _grow(self, rows: int, width: int) -> None:
        R0, W0 = self.tables.shape
        grown = torch.full((max(rows, 2 * R0 if rows > R0 else R0),
                            max(width, 2 * W0 if width > W0 else W0)), -1,
                           dtype=torch.int32, device=self.device)
        grown[:R0, :W0] = self.tables
        self.tables = grown

    def build(self, plan: BatchPlan, prev_ids: torch.Tensor | None = None
              ) -> tuple[AttentionBatch, torch.Tensor]:
        """(AttentionBatch, input ids (T,) int64) on the device for one batch plan. `prev_ids`
        (D,) on the device: the previous step's draws, for the plan's deferred input ids."""
        B, T = plan.num_rows, plan.num_tokens
        N, P = len(plan.logits_rows), len(plan.deferred_tokens)
        dev, bs = self.device, self.block_size
        t64, o64 = _pack([plan.input_ids, plan.logits_rows, plan.deferred_tokens,
                          plan.deferred_draws], np.int64, 2, dev)                   # 2 x 8 = 16 B
        t32, o32 = _pack([plan.seq_rows, plan.starts, plan.cu_seqlens_q, plan.rope_offsets],
                         np.int32, 4, dev)                                         # 4 x 4 = 16 B
        rows = t32[o32[0]:o32[0] + B].long()                                       # (B,)
        starts = t32[o32[1]:o32[1] + B]                                            # (B,) int32
        cu = t32[o32[2]:o32[2] + B + 1]                                            # (B+1,) int32
        q_lens = cu[1:] - cu[:-1]                                                  # (B,) int32
        context_lens = starts + q_lens                                             # (B,) int32
        tables = self.tables[:, :plan.table_width].index_select(0, rows)           # (B, W)
        if T == B:                                   # every row one token: row b is token b
            pos = starts.long()                                                    # (T,)
            slot_block = tables.gather(1, (pos // bs).unsqueeze(1)).squeeze(1)      # (T,)
            offsets = t32[o32[3]:o32[3] + B].long() if plan.has_offsets else None
        else:
            seg = torch.repeat_interleave(torch.arange(B, device=dev), q_lens.long(),
                                          output_size=T)                           # (T,) row of t
            pos = (torch.arange(T, device=dev) - cu[:-1].long().index_select(0, seg)
                   + starts.long().index_select(0, seg))                           # (T,)
            slot_block = tables[seg, pos // bs]                                    # (T,)
            offsets = (t32[o32[3]:o32[3] + B].long().index_select(0, seg)
                       if plan.has_offsets else None)
        slots = slot_block.long() * bs + pos % bs                                  # (T,)
        batch = AttentionBatch(
            positions=pos if offsets is None else pos - offsets,                   # (T,)
            slot_mapping=slots, cu_seqlens_q=cu, context_lens=context_lens,
            block_tables=tables, max_q_len=plan.max_q_len,
            max_context_len=plan.max_context_len, mask=plan.mask,
            num_decodes=plan.num_decodes,
            logits_indices=t64[o64[1]:o64[1] + N],                                 # (N,)
            has_holes=plan.has_holes, has_prefix=plan.has_prefix,
            num_verify=plan.num_verify, verify_q_len=plan.verify_q_len)
        ids = t64[o64[0]:o64[0] + T]                                               # (T,)
        if P:
            if prev_ids is None:
                raise RuntimeError("a batch plan names the previous step's draws, but no step "
                                   "was submitted before it")
            where, draws = t64[o64[2]:o64[2] + P], t64[o64[3]:o64[3] + P]             # (P,)
            ids.index_copy_(0, where, prev_ids.index_select(0, draws))             # on device
        return batch, ids


def host_to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host list as a tensor on `device`: on CUDA through pinned memory, non-blocking
    (a pageable copy would wait for every kernel queued before it); elsewhere a plain tensor."""
    t = torch.tensor(values, dtype=dtype)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def _host(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy array (that nobody changes later) as a tensor on `device`."""
    t = torch.from_numpy(arr)
    if device.type == "cuda":
        # Pinned + non-blocking: a pageable copy waits for every kernel queued before it, which
        # would stall the host on the previous step (overlap scheduling). The caching host
        # allocator keeps the pinned block until the copy has run.
        return t.pin_memory().to(device, non_blocking=True)
    return t if device.type == "cpu" else t.to(device)


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
    return _host(flat, device), offsets


def to_pinned(t: torch.Tensor) -> torch.Tensor:
    """A pinned host tensor that `t` (on CUDA) is being copied into, without blocking."""
    host = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host
