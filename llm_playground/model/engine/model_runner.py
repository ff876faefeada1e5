"""`ModelRunner`: runs a `StepPlan` on the network and returns sampled ids. It owns the tensors.

What it owns: the network (model/network/llama.py), the one KV storage (model/network/
kv_cache.py), the device batch (model/engine/device_batch.py), the decode CUDA graphs
(model/engine/cuda_graphs.py), one torch.Generator per draw key, and the sampler
(model/engine/sampler.py). One call per step: `execute(plan) -> StepResult`.
What it does not know: requests, sequences, the scheduler, block ownership or stop rules. A plan
says which tokens go where (slots, block tables) and what to draw from which logits rows; the
runner never decides either. See docs/RUNTIME.md for how overlap scheduling, speculative
verification, tensor parallelism and a runner in another process fit this seam.

Order inside `execute`: re-rotate compacted keys (sliding patterns), copy-on-write block copies,
one forward per batch plan (a pure-decode batch replays a CUDA graph when one is captured),
logits of the rows that need them, then every draw in one batched `sample` call (a row may
feed several draws: the n > 1 fork of a prompt) and the top log-probabilities rows asked for.
The only device-to-host sync is the final copy of the sampled ids (and of the logprobs). Draws
whose params set `logprobs` go through `sample_with_choices` instead (same ids, plus what each
filter stage considered: StepResult.choices); a step where none asks never builds that report.
"""
from __future__ import annotations

import numpy as np
import torch

from llm_playground.kernels.mask import MaskSpec
from llm_playground.model.engine import eviction
from llm_playground.model.engine import sampler as sampling
from llm_playground.model.engine.device_batch import to_device
from llm_playground.model.engine.step_plan import BatchPlan, StepPlan, StepResult
from llm_playground.model.network.kv_cache import KVCache


class ModelRunner:
    """The network, its KV blocks and its sampler on one device (see the module docstring)."""

    def __init__(self, model, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device, cuda_graphs: bool = False, max_num_seqs: int = 1,
                 max_blocks_per_seq: int = 1, capture_mask: MaskSpec | None = None) -> None:
        mc = model.config
        self.model = model
        self.device = torch.device(device)
        self.kv = KVCache(mc.num_layers, num_blocks, block_size, mc.num_kv_heads, mc.head_dim,
                          dtype, self.device)
        # No sequence keeps more tokens in the cache than the pool holds, nor RoPE positions past
        # its table: size the RoPE tables and the graphs' block tables by that, not by the
        # context a model file claims (2^31 - 1 in a crafted one).
        max_blocks_per_seq = max(1, min(max_blocks_per_seq, num_blocks))
        model.ensure_positions(max_blocks_per_seq * block_size)
        self.graph_runner = None
        if cuda_graphs and self.device.type == "cuda":
            from llm_playground.model.engine.cuda_graphs import DecodeGraphRunner
            self.graph_runner = DecodeGraphRunner(model, self.kv, max_num_seqs=max_num_seqs,
                                                  max_blocks_per_seq=max_blocks_per_seq)
            if capture_mask is not None:
                # Capture every batch-size bucket now (as vLLM does at start-up), not in the
                # middle of serving: a capture compiles and warms up, which would stall a step.
                self.graph_runner.capture_all(capture_mask)
        self._generators: dict[tuple[int, int], torch.Generator] = {}
        self._in_flight: tuple[StepPlan, list[torch.Tensor]] | None = None

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
        """Launch the step's device work (re-rotations, block copies, forwards) and return
        without waiting for it; `collect` samples and brings the ids back. The caller may do
        its own bookkeeping in between, while the device works."""
        if self._in_flight is not None:
            raise RuntimeError("ModelRunner.submit: the previous step was not collected")
        for delta, block_ids in plan.rerotations:
            eviction.rerotate_keys(self.kv, block_ids, delta, self.model.rope_cos,
                                   self.model.rope_sin)
        for src, dst in plan.block_copies:
            self.kv.copy_block(src, dst)
        parts = [self._logits(b) for b in plan.batches]
        self._in_flight = (plan, [p for p in parts if p is not None])

    @torch.inference_mode()
    def collect(self) -> StepResult:
        """Sample the submitted step's logits rows; the one device-to-host sync of a step."""
        if self._in_flight is None:
            raise RuntimeError("ModelRunner.collect: no step was submitted")
        (plan, parts), self._in_flight = self._in_flight, None
        result = StepResult()
        if parts:
            logits = parts[0] if len(parts) == 1 else torch.cat(parts)                 # (N, V) f32
            result = self._sample(logits, [r for b in plan.batches for r in b.logits])
        for key in plan.released_keys:
            self._generators.pop(key, None)
        return result

    def _logits(self, plan: BatchPlan) -> torch.Tensor | None:
        """Logits (N, V) float32 of the batch's logits rows, in order; None when it has none."""
        batch, input_ids = to_device(plan, self.device)
        if (self.graph_runner is not None and plan.num_decodes == plan.num_rows
                and len(plan.logits) == plan.num_rows and self.graph_runner.can_run(batch)):
            return self.graph_runner.run(input_ids, batch).clone()                     # (B, V)
        hidden = self.model(input_ids, batch, self.kv)                                 # (T, H)
        if len(plan.logits) == 0:
            return None
        return self.model.compute_logits(hidden[batch.logits_indices])                 # (N, V)

    def _sample(self, logits: torch.Tensor, requests) -> StepResult:
        """Every draw of every row in one batched `sample` call, then the asked-for logprobs."""
        rows, params, gens, seen = [], [], [], []
        for i, req in enumerate(requests):
            for d in req.draws:
                rows.append(i)
                params.append(d.params)
                gens.append(self._generator(d))
                seen.append(list(d.seen_ids))
        tokens: list[int] = []
        choices = None
        if rows:
            draw_logits = logits
            if rows != list(range(logits.shape[0])):
                draw_logits = logits[torch.tensor(rows, device=logits.device)]          # (D, V)
            if any(p.logprobs is not None for p in params):   # some draw asks what was considered
                tokens, choices = sampling.sample_with_choices(draw_logits, params, gens, seen)
            else:
                tokens = sampling.sample(draw_logits, params, gens, seen)
        result = StepResult(tokens=[[] for _ in requests], top_logprobs=[None] * len(requests))
        for i, tok in zip(rows, tokens):
            result.tokens[i].append(tok)
        if choices is not None:
            result.choices = _choices_per_row(len(requests), rows, choices)
        want = [(i, r.top_logprobs) for i, r in enumerate(requests) if r.top_logprobs > 0]
        if want:
            idx = torch.tensor([i for i, _ in want], device=logits.device)
            lp = torch.log_softmax(logits.index_select(0, idx).float(), dim=-1)        # (M, V)
            k = min(max(n for _, n in want), lp.shape[1])
            top_lp, top_ids = torch.topk(lp, k, dim=-1)                                # (M, k)
            top_lp, top_ids = top_lp.cpu().numpy(), top_ids.cpu().numpy()
            for j, (i, n) in enumerate(want):
                result.top_logprobs[i] = (top_ids[j, :n].astype(np.int64), top_lp[j, :n])
        return result

    def _generator(self, draw) -> torch.Generator:
        g = self._generators.get(draw.key)
        if g is None:
            g = self._generators[draw.key] = sampling.make_generator(
                draw.seed, draw.sample_index, self.device)
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


def _choices_per_row(num_rows: int, rows: list[int], choices: list) -> list:
    """Per logits row, its draws' TokenChoices (parallel to StepResult.tokens[i]), or None for
    a row none of whose draws asked."""
    per_row: list = [None] * num_rows
    for i, choice in zip(rows, choices):
        if per_row[i] is None:
            per_row[i] = []
        per_row[i].append(choice)
    return [None if r is None or all(c is None for c in r) else r for r in per_row]
