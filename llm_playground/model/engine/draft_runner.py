"""The draft model of speculative decoding, on the runner side: it proposes k tokens per row.

Two kinds (`--speculate draft:PATH:K` / `draft:layers=L:K`, model/engine/spec_config.py):
- a separate smaller model with the target's vocabulary, loaded by `load_draft` with the
  target's dtype and device, with its own paged KV cache of the target's block count and block
  size: it reads the target's block tables (the same rows on the device, model/engine/
  device_batch.py), so the block manager serves both caches and copy-on-write copies both;
- self-speculation: the target's own first L layers, then its final norm and head (LayerSkip,
  Draft-and-Verify). Its K/V are the target's layers 0..L-1, which the target has already
  written for every accepted position: it needs no cache and no catch-up of its own. L must
  be below the target's layer count (the draft is never the full target).

`DraftProposer.propose(plan, verifies, generators)` runs, inside the target's step and before
the target's forward: one catch-up forward over the rows' positions the draft lacks
(`Verify.draft_start` .. the row's start: one or two ids once the draft is level), whose last
logits give proposal 1, then k - 1 one-token forwards for proposals 2..k. A draft far behind
(a long prompt, a recompute after preemption) first catches up over several steps in
draft-only forwards without logits (`catch_up`, the plan's `DraftCatchup`s): the engine sizes
every draft catch-up by the step's token budget (model/engine/spec_planner.py). Each
proposal is chosen with the sampler's filters (greedy: the argmax; else drawn from the filtered
draft distribution, whose rows are kept for the rejection sampling). All on the device, no sync.
The draft's K/V for rejected proposals is simply left behind: the engine moves the draft's
computed length back (`Sequence.draft_computed`), and a wrong draft K/V can only cost
acceptance, never exactness (the target verifies every token).
This module does not plan, verify or own blocks.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llm_playground.kernels.dispatch import rms_norm
from llm_playground.model.engine import spec_verify
from llm_playground.model.engine.step_plan import BatchPlan, Verify
from llm_playground.model.network.kv_cache import KVCache
from llm_playground.model.weights.loader import LoadedModel
from llm_playground.model.network.weight_contract import ModelLoadError


class FirstLayers(torch.nn.Module):
    """The target's first `num_layers` decoder layers, its final norm and its head: the same
    forward / compute_logits interface as LlamaForCausalLM, reading the target's own K/V."""

    def __init__(self, target, num_layers: int) -> None:
        super().__init__()
        self.target = target
        self.num_layers = num_layers
        self.config = target.config

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, batch, kv: KVCache) -> torch.Tensor:
        """input_ids (T,) -> hidden (T, H) after layers 0..L-1 and the final norm."""
        t = self.target
        hidden = F.embedding(input_ids, t.embed_tokens)                        # (T, H)
        residual = None
        for i in range(self.num_layers):
            hidden, residual = t.layers[i](hidden, residual, batch, kv.k[i], kv.v[i],
                                           t.rope_cos, t.rope_sin)
        hidden, _ = rms_norm(hidden, t.norm, t.config.rms_norm_eps, residual)
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (N, H) -> logits (N, V) float32, by the target's head."""
        return self.target.compute_logits(hidden)


class DraftProposer:
    """A draft network and the K/V it reads (module docstring)."""

    def __init__(self, model, kv: KVCache, own_cache: bool, name: str) -> None:
        self.model = model
        self.kv = kv
        self.own_cache = own_cache      # False: the target's cache (first layers)
        self.name = name

    def attach(self, target_kv: KVCache) -> None:
        """Self-speculation reads the target's cache (known once the runner has made it)."""
        if not self.own_cache:
            self.kv = target_kv

    def copy_block(self, src: int, dst: int) -> None:
        """Copy-on-write of a block in the draft's own cache (a no-op when it shares)."""
        if self.own_cache:
            self.kv.copy_block(src, dst)

    def propose(self, plan: BatchPlan, verifies: list[Verify], params: list, generators: list,
                device_batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Proposals (R, kmax) int64 for the rows of `verifies` (kmax = their largest k) and,
        when some row samples, the draft's filtered distributions (R, kmax, V) float32."""
        R = len(verifies)
        kmax = max(v.k for v in verifies)
        rows = plan.seq_rows[[v.row for v in verifies]]
        starts = np.array([v.draft_start for v in verifies], dtype=np.int32)
        q_lens = np.array([len(v.catchup_ids) for v in verifies], dtype=np.int32)
        # catch-up: one chunk per row, decodes (one id) first, as every batch plan orders them
        order = np.argsort(q_lens > 1, kind="stable")
        ids = np.concatenate([np.asarray(verifies[i].catchup_ids, dtype=np.int64) for i in order])
        cu = np.concatenate([[0], np.cumsum(q_lens[order])]).astype(np.int32)
        first = self._plan(plan, rows[order], starts[order], cu, ids, cu[1:] - 1, False)
        logits = self._forward(first, device_batch)                              # (R, V)
        inverse = torch.as_tensor(np.argsort(order), device=logits.device)
        logits = logits.index_select(0, inverse)                                 # row order
        chosen, probs = [], []
        ends = starts + q_lens                                                   # next position
        # A row whose k is below kmax keeps writing its last position (the verify overwrites
        # it) instead of running past its blocks; its extra proposals are dropped.
        last = ends - 1 + np.array([v.k for v in verifies], dtype=np.int32)
        for j in range(kmax):
            tok, prob = spec_verify.draft_choose(logits, params, generators)     # (R,), (R, V)
            chosen.append(tok)
            probs.append(prob)
            if j + 1 == kmax:
                break
            step = self._plan(plan, rows, np.minimum(ends + j, last), np.arange(R + 1, dtype=np.int32),
                              np.zeros(R, dtype=np.int64), np.arange(R), True)
            logits = self._forward(step, device_batch, tok)                      # (R, V)
        proposals = torch.stack(chosen, dim=1)                                   # (R, kmax)
        if all(p is None for p in probs):
            return proposals, None
        V = logits.shape[1]
        probs = [p if p is not None else torch.zeros(R, V, device=logits.device) for p in probs]
        return proposals, torch.stack(probs, dim=1)                              # (R, kmax, V)

    def catch_up(self, plan: BatchPlan, device_batch) -> None:
        """The draft's K/V for the plan's `draft_catchups` (positions the target has and the
        draft lacks), in one draft-only forward without logits."""
        entries = plan.draft_catchups
        if not self.own_cache or not entries:
            return
        q_lens = np.array([len(e.ids) for e in entries], dtype=np.int32)
        order = np.argsort(q_lens > 1, kind="stable")        # one-id rows first, as plans are
        ids = np.concatenate([np.asarray(entries[i].ids, dtype=np.int64) for i in order])
        cu = np.concatenate([[0], np.cumsum(q_lens[order])]).astype(np.int32)
        rows = plan.seq_rows[[entries[i].row for i in order]]
        starts = np.array([entries[i].start for i in order], dtype=np.int32)
        batch, input_ids = device_batch.build(
            self._plan(plan, rows, starts, cu, ids, np.zeros(0, np.int64), False), None)
        self.model(input_ids, batch, self.kv)                                    # (T, H)

    def _plan(self, target: BatchPlan, rows, starts, cu, ids, logits_rows,
              from_device: bool) -> BatchPlan:
        """A batch plan of the draft's own forward over the target's block-table rows;
        `from_device`: one id per row, the previous proposals (filled on the device)."""
        q = np.diff(cu)
        B = len(starts)
        deferred = np.arange(B, dtype=np.int64) if from_device else None
        ends = starts + q
        return BatchPlan(
            mask=target.mask, input_ids=ids, seq_rows=np.asarray(rows, dtype=np.int32),
            starts=np.asarray(starts, dtype=np.int32), cu_seqlens_q=cu,
            rope_offsets=np.zeros(B, dtype=np.int32),
            logits_rows=np.asarray(logits_rows, dtype=np.int64), logits=[],
            num_decodes=int((q == 1).sum()), max_q_len=int(q.max()),
            max_context_len=int(ends.max()), table_width=target.table_width,
            has_holes=target.has_holes, has_prefix=bool((starts > 0).any()),
            deferred_tokens=deferred if deferred is not None else np.zeros(0, np.int64),
            deferred_draws=deferred if deferred is not None else np.zeros(0, np.int64))

    def _forward(self, plan: BatchPlan, device_batch, prev: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """(N, V) draft logits of the plan's logits rows; `prev` (B,) fills its ids (one
        proposal per row, on the device)."""
        batch, input_ids = device_batch.build(plan, prev if len(plan.deferred_tokens) else None)
        hidden = self.model(input_ids, batch, self.kv)                           # (T, H)
        return self.model.compute_logits(hidden.index_select(0, batch.logits_indices))


def load_draft(spec, target: LoadedModel, num_blocks: int, block_size: int) -> DraftProposer:
    """The DraftProposer of `spec` (draft:PATH:K or draft:layers=L:K) for `target`; raises
    ModelLoadError (one line) for a draft that cannot serve it."""
    tc = target.config
    if spec.draft_layers is not None:
        L = spec.draft_layers
        if L >= tc.num_layers:
            raise ModelLoadError(f"speculate draft:layers={L}: the target has {tc.num_layers} "
                                 f"layers; L must be below that (the draft is never the full "
                                 f"target)")
        return DraftProposer(FirstLayers(target.model, L), None, own_cache=False,
                             name=f"first {L} of {tc.num_layers} layers")
    from llm_playground.model.weights.loader import load_model
    dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16",
             torch.float16: "float16"}.get(target.dtype)
    draft = load_model(spec.draft_path, dtype, str(target.device))
    return draft_from_loaded(draft, target, num_blocks, block_size)


def draft_from_loaded(draft: LoadedModel, target: LoadedModel, num_blocks: int,
                      block_size: int) -> DraftProposer:
    """A separate draft model (already loaded) with its own paged cache beside the target's."""
    dc, tc = draft.config, target.config
    if dc.vocab_size != tc.vocab_size:
        raise ModelLoadError(f"speculate draft {draft.name}: vocabulary of {dc.vocab_size} ids, "
                             f"the target has {tc.vocab_size}; a draft must share the target's")
    kv = KVCache(dc.num_layers, num_blocks, block_size, dc.num_kv_heads, dc.head_dim,
                 draft.dtype, target.device)
    draft.model.ensure_positions(min(tc.max_position, num_blocks * block_size))
    return DraftProposer(draft.model, kv, own_cache=True, name=draft.name)
