"""`ModelRunner`: runs a `StepPlan` on the network and returns sampled ids. It owns the tensors.

What it owns: the network (model/network/llama.py), the one KV storage (model/network/
kv_cache.py), the persistent device batch (model/engine/device_batch.py: the live sequences'
block tables on the device, updated by the rows each plan says changed), the decode CUDA
graphs (model/engine/cuda_graphs.py), one torch.Generator per draw key, and the sampler
(model/engine/sampler.py). One call per step: `execute(plan) -> StepResult`.
It does not know requests, sequences, the scheduler, block ownership or stop rules: a plan says
which tokens go where and what to draw from which logits rows (docs/RUNTIME.md: how overlap,
speculation, tensor parallelism and a runner in another process fit this seam).

Order inside `submit`: write the block-table rows that changed, re-rotate compacted keys
(sliding patterns), copy-on-write block copies, one forward per batch plan (a pure-decode batch replays a CUDA graph when one is captured; a
decode whose input the previous step drew gets it by a device-side gather, overlap scheduling),
logits of the rows that need them, then every draw in one batched `sample_ids` call (a row may
feed several draws: the n > 1 fork of a prompt) and the top log-probabilities rows asked for,
all on the device; then one non-blocking copy of the drawn ids into pinned host memory (CUDA).
`submit` returns without waiting; `collect` waits for that copy (the one device-to-host sync of
a step) and turns it into a StepResult. Up to two steps may be submitted and not collected
(step N+1 is launched before step N is collected); `collect` returns the oldest. Draws whose
params set `logprobs` go through `sample_ids_with_choices` instead (same ids, plus what each
filter stage considered: StepResult.choices), whose few tensors are copied to pinned memory
beside the ids, so such a step overlaps too; a step where none asks never builds that report.
Speculative verification (a LogitsRequest with `verify`, k + 1 logits rows): before the batch's
forward the draft model, if the runner has one (model/engine/draft_runner.py), proposes into the
row's placeholder ids; after it `spec_verify.verify_requests` accepts or rejects on the device,
and the result's ids for the row are the m + 1 emitted tokens (with `logprobs`, a TokenChoice
each: `spec_verify.verify_choices`).
After a fault (an exception out of `submit` or `collect`) the engine calls `discard_in_flight`:
the steps submitted and not collected are dropped, and the next plan names no earlier draw.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch

from llm_playground.kernels.mask import MaskSpec
from llm_playground.model.engine import eviction
from llm_playground.model.engine import sampler as sampling
from llm_playground.model.engine import spec_verify
from llm_playground.model.engine.device_batch import DeviceBatch, host_to_device, to_pinned
from llm_playground.model.engine.token_choice import choices_per_row
from llm_playground.model.engine.step_plan import BatchPlan, StepPlan, StepResult
from llm_playground.model.network.kv_cache import KVCache


class ModelRunner:
    """The network, its KV blocks and its sampler on one device (see the module docstring)."""

    def __init__(self, model, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device, cuda_graphs: bool = False, max_num_seqs: int = 1,
                 max_blocks_per_seq: int = 1, capture_mask: MaskSpec | None = None,
                 kv_dtype: str | None = None, draft=None) -> None:
        mc = model.config
        self.model = model
        self.device = torch.device(device)
        self.kv = KVCache(mc.num_layers, num_blocks, block_size, mc.num_kv_heads, mc.head_dim,
                          dtype, self.device, kv_dtype=kv_dtype)   # kv_dtype: network/kv_cache.py
        # No sequence keeps more tokens in the cache than the pool holds, nor RoPE positions past
        # its table: size the RoPE tables and the graphs' block tables by that, not by the
        # context a model file claims (2^31 - 1 in a crafted one).
        max_blocks_per_seq = max(1, min(max_blocks_per_seq, num_blocks))
        model.ensure_positions(max_blocks_per_seq * block_size)
        self.batch = DeviceBatch(self.device, block_size,
                                 width=max(64, min(max_blocks_per_seq, 4096)))
        self.graph_runner = None
        if cuda_graphs and self.device.type == "cuda":
            from llm_playground.model.engine.cuda_graphs import DecodeGraphRunner
            self.graph_runner = DecodeGraphRunner(model, self.kv, max_num_seqs=max_num_seqs,
                                                  max_blocks_per_seq=max_blocks_per_seq)
            if capture_mask is not None:
                # Capture every batch-size bucket now (as vLLM does at start-up), not in the
                # middle of serving: a capture compiles and warms up, which would stall a step.
                self.graph_runner.capture_all(capture_mask)
        self.draft = draft                 # DraftProposer (speculation with a draft) or None
        if draft is not None:
            draft.attach(self.kv)
        self._generators: dict[tuple, torch.Generator] = {}
        self._submitted: deque[_Submitted] = deque()      # oldest first, at most MAX_IN_FLIGHT
        # (D,) int64 on the device: the draws of the last submitted step, which the next plan's
        # deferred input ids name (BatchPlan.deferred_draws).
        self._last_ids: torch.Tensor | None = None

    # Steps submitted and not yet collected: step N and the step N+1 planned while N ran.
    MAX_IN_FLIGHT = 2

    @property
    def bytes_per_block(self) -> int:
        """Bytes one KV block takes over all layers, K and V."""
        return self.kv.bytes_per_block

    # ---- one step ------------------------------------------------------------------------------
    def execute(self, plan: StepPlan) -> StepResult:
        """Run one step plan; returns per logits row the sampled ids and the top logprobs."""
        self.submit(plan)
        return self.collect()

    @torch.inference_mode()
    def submit(self, plan: StepPlan) -> None:
        """Launch the step's device work (re-rotations, block copies, forwards, sampling, the copy
        of the ids to the host) and return without waiting for it; `collect` brings the ids back.
        The caller may plan the next step in between, while the device works."""
        if len(self._submitted) >= self.MAX_IN_FLIGHT:
            raise RuntimeError(f"ModelRunner.submit: {self.MAX_IN_FLIGHT} steps are already "
                               "submitted and not collected")
        self.batch.apply_table_updates(plan.table_rows, plan.table_data)
        for delta, block_ids in plan.rerotations:
            eviction.rerotate_keys(self.kv, block_ids, delta, self.model.rope_cos,
                                   self.model.rope_sin)
        for src, dst in plan.block_copies:
            self.kv.copy_block(src, dst)
            if self.draft is not None:
                self.draft.copy_block(src, dst)
        prev = self._last_ids
        parts, proposed = [], {}
        for b in plan.batches:
            part = self._logits(b, prev, proposed)
            if part is not None:
                parts.append(part)
        requests = [r for b in plan.batches for r in b.logits]
        ids, top, choices = torch.zeros(0, dtype=torch.long, device=self.device), None, None
        verified, one_each = ([], None), False
        if parts:
            logits = parts[0] if len(parts) == 1 else torch.cat(parts)                 # (N, V) f32
            ids, top, choices, verified, one_each = self._sample(logits, requests, proposed)
        self._last_ids = ids
        for key in plan.released_keys:
            self._generators.pop(key, None)
            self._generators.pop(spec_verify.draft_key(key), None)
        self._submitted.append(_Submitted(requests, ids, top, choices, verified, one_each))

    @torch.inference_mode()
    def collect(self) -> StepResult:
        """The oldest submitted step's result: waits for its ids to reach the host (the one
        device-to-host sync of a step)."""
        if not self._submitted:
            raise RuntimeError("ModelRunner.collect: no step was submitted")
        return self._submitted.popleft().result()

    def discard_in_flight(self) -> None:
        """Forget the steps in flight (a fault failed their requests): the next plan names none."""
        self._submitted.clear()
        self._last_ids = None

    @property
    def num_in_flight(self) -> int:
        """Steps submitted and not yet collected."""
        return len(self._submitted)

    def _logits(self, plan: BatchPlan, prev_ids: torch.Tensor | None,
                proposed: dict) -> torch.Tensor | None:
        """Logits (N, V) float32 of the batch's logits rows, in order; None when it has none.
        prev_ids (D,): the previous step's draws, for the plan's deferred input ids. The draft
        model's proposals for the batch's verify rows go into `proposed` (by request id)."""
        batch, input_ids = self.batch.build(plan, prev_ids)
        drafted = [r for r in plan.logits if r.verify is not None and not r.verify.proposals]
        if plan.draft_catchups and self.draft is not None:
            self.draft.catch_up(plan, self.batch)
        if drafted:
            self._propose(plan, drafted, input_ids, proposed)
        if (self.graph_runner is not None and plan.num_decodes == plan.num_rows
                and len(plan.logits) == plan.num_rows and self.graph_runner.can_run(batch)):
            return self.graph_runner.run(input_ids, batch).clone()                     # (B, V)
        hidden = self.model(input_ids, batch, self.kv)                                 # (T, H)
        if len(plan.logits) == 0:
            return None
        return self.model.compute_logits(hidden.index_select(0, batch.logits_indices))  # (N, V)

    def _propose(self, plan: BatchPlan, drafted: list, input_ids: torch.Tensor,
                 proposed: dict) -> None:
        """The draft model's proposals for the batch's `drafted` verify rows, written into
        their placeholder input ids (on the device) and kept in `proposed` for verification."""
        if self.draft is None:
            raise RuntimeError("a verify row asks for draft proposals, but the runner has no draft")
        gens = [self._generator(r.draws[0], draft=True) for r in drafted]
        props, probs = self.draft.propose(plan, [r.verify for r in drafted],
                                          [r.draws[0].params for r in drafted], gens, self.batch)
        kmax, cu = props.shape[1], plan.cu_seqlens_q
        where, src = [], []
        for j, r in enumerate(drafted):
            v = r.verify
            where += range(int(cu[v.row]) + 1, int(cu[v.row]) + 1 + v.k)
            src += range(j * kmax, j * kmax + v.k)
            proposed[id(r)] = (props[j, :v.k], None if probs is None else probs[j, :v.k])
        dev = input_ids.device
        input_ids.index_copy_(0, host_to_device(where, torch.long, dev),
                              props.reshape(-1).index_select(0, host_to_device(src, torch.long, dev)))

    def _sample(self, logits: torch.Tensor, requests, proposed: dict
                ) -> tuple[torch.Tensor, tuple | None, sampling.PendingChoices | None, list, bool]:
        """Every draw of every row in one batched `sample_ids` call, then the asked-for top
        logprobs, all on the device: ((D,) ids, (rows, top ids (M, k), top logprobs (M, k)) or
        None, the draws' PendingChoices or None when none asked, (the verifications (request
        index, ids (k+1,), m (1,)): spec_verify.verify_requests, their TokenChoices or None:
        verify_choices), whether every request has one draw and none verifies). A
        verification's draw slot in the (D,) ids holds its last emitted id (it never runs ahead)."""
        draws, rows, vslots = [], [], []        # per draw: its Draw, its logits row
        offsets = None                          # per request its first row: range() until a verify
        o, one_each = 0, True                   # one_each: every request one draw, no verify
        for i, req in enumerate(requests):
            if req.verify is not None:
                offsets = list(range(i)) if offsets is None else offsets
                offsets.append(o)
                one_each = False
                vslots.append(len(draws) + len(vslots))
                o += req.num_rows
                continue
            if offsets is not None:
                offsets.append(o)
            n = len(req.draws)
            draws += req.draws
            rows += [o] * n
            one_each = one_each and n == 1
            o += 1
        offsets = range(len(requests)) if offsets is None else offsets
        known = self._generators
        params, seen = [d.params for d in draws], [d.seen_ids for d in draws]
        gens = [known[d.key] if d.key in known else self._generator(d) for d in draws]
        verified, vchoices = [], None
        if vslots:
            verified = spec_verify.verify_requests(logits, requests, offsets, proposed,
                                                   self._generator)
            vchoices = spec_verify.verify_choices(logits, requests, offsets, verified)
        ids = torch.zeros(0, dtype=torch.long, device=logits.device)
        choices = None
        if rows:
            draw_logits = logits
            if rows != list(range(logits.shape[0])):
                draw_logits = logits.index_select(
                    0, host_to_device(rows, torch.long, logits.device))        # (D, V)
            if [p for p in params if p.logprobs is not None]:  # a draw asks what was considered
                ids, choices = sampling.sample_ids_with_choices(draw_logits, params, gens, seen)
            else:
                ids = sampling.sample_ids(draw_logits, params, gens, seen)             # (D,)
        if vslots:
            vset = set(vslots)
            slots = [j for j in range(len(draws) + len(vslots)) if j not in vset]
            full = torch.zeros(len(slots) + len(vslots), dtype=torch.long, device=logits.device)
            last = torch.cat([v_ids.index_select(0, m) for _, v_ids, m in verified])
            full.index_copy_(0, host_to_device(vslots, torch.long, logits.device), last)
            if slots:
                full.index_copy_(0, host_to_device(slots, torch.long, logits.device), ids)
            ids = full
        want = [(i, r.top_logprobs) for i, r in enumerate(requests) if r.top_logprobs > 0]
        top = None
        if want:
            idx = host_to_device([offsets[i] for i, _ in want], torch.long, logits.device)
            lp = torch.log_softmax(logits.index_select(0, idx).float(), dim=-1)        # (M, V)
            k = min(max(n for _, n in want), lp.shape[1])
            top_lp, top_ids = torch.topk(lp, k, dim=-1)                                # (M, k)
            top = (want, top_ids, top_lp)
        return ids, top, choices, (verified, vchoices), one_each

    def _generator(self, draw, draft: bool = False) -> torch.Generator:
        """The draw's random stream (its draft's with `draft`), made on first use."""
        key = spec_verify.draft_key(draw.key) if draft else draw.key
        g = self._generators.get(key)
        if g is None:
            seed = spec_verify.draft_seed(draw.seed) if draft else draw.seed
            g = self._generators[key] = sampling.make_generator(seed, draw.sample_index,
                                                                self.device)
        return g

    # ---- outside the step loop -----------------------------------------------------------------
    def capture_graphs(self, mask: MaskSpec) -> None:
        """Capture the decode graphs of a new attention mask ahead of serving (no-op without)."""
        if self.graph_runner is not None:
            self.graph_runner.capture_all(mask)

    @torch.inference_mode()
    def attention_weights(self, prompt_ids: list[int], layer: int, head: int, mask: MaskSpec,
                          block_size: int) -> list[list[float]]:
        """One head's attention matrix over a prompt (reference path), as nested lists."""
        probs = self.model.attention_probs(prompt_ids, layer, head, mask=mask,
                                           block_size=block_size)
        return probs.float().cpu().tolist()


class _Submitted:
    """One step launched and not yet collected: its logits requests, and its drawn ids (and top
    logprobs, and what the sampler considered) on their way to the host. On CUDA the copies go
    into pinned memory without blocking and an event marks their end; `result` waits for it.
    On CPU they are plain tensors."""
    __slots__ = ("requests", "ids", "top", "choices", "event", "verified", "vchoices",
                 "one_each")

    def __init__(self, requests, ids: torch.Tensor, top: tuple | None,
                 choices: sampling.PendingChoices | None = None, verified: tuple = ([], None),
                 one_each: bool = False) -> None:
        self.requests = requests
        self.one_each = one_each      # every request one draw, no verification: ids[i] is row i's
        self.event = None
        verified, self.vchoices = verified        # vchoices: (request indices, PendingChoices)
        # verifications: (request index, emitted ids (k+1,), accepted (1,)) as one pair of
        # flat tensors, so that one copy each brings them to the host
        self.verified = None if not verified else (
            [i for i, _, _ in verified], torch.cat([v for _, v, _ in verified]),
            torch.cat([m for _, _, m in verified]))
        if ids.device.type == "cuda":
            ids = to_pinned(ids)
            if self.verified is not None:
                self.verified = (self.verified[0], to_pinned(self.verified[1]),
                                 to_pinned(self.verified[2]))
            if top is not None:
                top = (top[0], to_pinned(top[1]), to_pinned(top[2]))
            for pending in (choices, self.vchoices and self.vchoices[1]):
                if pending:
                    pending.to_host(to_pinned)
            self.event = torch.cuda.Event()
            self.event.record()
        self.ids, self.top, self.choices = ids, top, choices

    def result(self) -> StepResult:
        """Per logits row its drawn ids and top logprobs (waits for the copies on CUDA)."""
        if self.event is not None:
            self.event.synchronize()
        requests = self.requests
        flat = self.ids.tolist()
        if self.one_each:
            result = StepResult(tokens=[[t] for t in flat], top_logprobs=[None] * len(requests))
        else:
            result = StepResult(tokens=[[] for _ in requests], top_logprobs=[None] * len(requests))
            j = 0
            for i, req in enumerate(requests):
                n = len(req.draws)
                if n:
                    result.tokens[i] = flat[j:j + n]
                    j += n
        if self.top is not None:
            want, top_ids, top_lp = self.top
            top_ids, top_lp = top_ids.numpy(), top_lp.numpy()
            for j, (i, n) in enumerate(want):
                result.top_logprobs[i] = (top_ids[j, :n].astype(np.int64), top_lp[j, :n])
        if self.verified is not None:
            which, v_ids, v_m = self.verified
            v_ids, v_m = v_ids.tolist(), v_m.tolist()
            o = 0
            for i, m in zip(which, v_m):
                result.tokens[i] = v_ids[o:o + m + 1]
                o += requests[i].verify.k + 1
        if self.choices is not None:
            rows = [i for i, req in enumerate(requests) if req.verify is None
                    for _ in req.draws]                                         # (D,) row of each draw
            result.choices = choices_per_row(len(requests), rows, self.choices.choices())
        if self.vchoices is not None:
            result.choices = spec_verify.place_choices(result.choices, requests, result.tokens,
                                                       *self.vchoices)
        return result
