"""The inference engine: requests in, one batched forward per step, tokens and reports out.

`Engine.step()` asks the scheduler (model/engine/scheduler.py) what runs, performs copy-on-write block
copies, builds one `AttentionBatch` of every scheduled sequence (decodes first, then prefill
chunks of any length; one forward per distinct attention mask when requests use different
patterns), runs the model, samples (model/engine/sampler.py), appends tokens, applies stop rules (EOS,
stop ids, stop strings, max tokens, context end), frees finished sequences, evicts blocks that
sliding patterns no longer need (model/engine/eviction.py), and returns a plain-data `StepReport`
(whose `sequences` still list the sequences that finished in the step, as they were before their
blocks were freed).

Parallel sampling (n > 1): sample 0 prefills the prompt; when the prompt's logits arrive it is
forked into n - 1 children sharing all its blocks, and each draws its first token from the same
logits with its own generator (seed + sample index). Later writes into the shared last block copy
it first (block manager). Errors in one request (empty prompt, too long, bad ids) finish that
request with finish_reason "error"; the engine keeps serving the others.
Beam search (`add_beam_request` / `beam_search`): live beams are sequences batched in the same
step; their logits go to model/engine/beam_search.py, which forks, keeps and drops them.
Batch packing lives in model/engine/batch_builder.py, admission checks, stop rules and
output plumbing in model/engine/request_rules.py.
This module does not know about the UI; the UI reads the reports.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch

from llm_playground.model.engine import beam_search as beams
from llm_playground.model.engine import sampler as sampling
from llm_playground.model.engine import eviction
from llm_playground.model.engine.batch_builder import build_batch
from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.cache_report import cache_report, sequence_reports
from llm_playground.model.engine.config import CPU_KV_BYTES_DEFAULT, EngineConfig
from llm_playground.model.network.kv_cache import KVCache, bytes_per_block
from llm_playground.model.engine.reports import CacheReport, RequestOutput, SequenceReport, StepReport
from llm_playground.model.engine.request_rules import check_prompt, collect_outputs, stop_reason, take_output
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.engine.scheduler import ScheduledSeq, Scheduler
from llm_playground.model.engine.sequence import Request, Sequence, SeqStatus, TextState
from llm_playground.model.engine.attention_patterns import AttentionPattern, parse_pattern


class RequestError(RuntimeError):
    """A request finished with an error (raised by the convenience `generate`)."""


class Engine:
    def __init__(self, loaded, config: EngineConfig | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """`loaded` is a weights.loader.LoadedModel; `clock` (seconds, monotonic) times arrivals,
        first tokens and steps: tests inject a fake one to get exact rates."""
        self.clock = clock
        self.config = config = config or EngineConfig()
        self.loaded = loaded
        self.model = loaded.model
        self.model_config = mc = loaded.config
        self.tokenizer = loaded.tokenizer
        self.device = torch.device(loaded.device)
        self.max_model_len = min(config.max_model_len or mc.max_position, mc.max_position)
        num_blocks = config.num_blocks or self._blocks_from_budget()
        self.kv = KVCache(mc.num_layers, num_blocks, config.block_size, mc.num_kv_heads,
                          mc.head_dim, loaded.dtype, self.device)
        self.bm = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.bm, config.max_num_batched_tokens, config.max_num_seqs,
                                   config.enable_chunked_prefill, self.max_model_len)
        self.pattern: AttentionPattern = parse_pattern(config.attention)
        self.graph_runner = None
        if config.cuda_graphs and self.device.type == "cuda":
            from llm_playground.model.engine.cuda_graphs import DecodeGraphRunner
            self.graph_runner = DecodeGraphRunner(
                self.model, self.kv, max_num_seqs=config.max_num_seqs,
                max_blocks_per_seq=self.bm.blocks_for(self.max_model_len))
            # Capture every batch-size bucket now (as vLLM does at start-up), not in the middle
            # of serving: a capture compiles and warms up, which would stall a running step.
            self.graph_runner.capture_all(self.pattern.spec)
        self.requests: dict[int, Request] = {}
        self._pending: list[RequestOutput] = []      # outputs decided outside step (abort, errors)
        # Sequences finished since the last report, as they were before their blocks were freed:
        # the next StepReport lists them (status "finished") beside the live ones.
        self._finished_reports: list[SequenceReport] = []
        self._next_request = 0
        self._next_seq = 0
        self._step = 0
        self.beam_groups: dict[int, beams.BeamGroup] = {}   # request id -> beam state

    @classmethod
    def from_path(cls, path: str | None = None, progress=None, **fields) -> "Engine":
        from llm_playground.model.weights.loader import load_model
        config = EngineConfig(**fields)
        loaded = load_model(path, config.dtype, config.device, progress=progress)
        return cls(loaded, config)

    def _blocks_from_budget(self) -> int:
        mc, cfg = self.model_config, self.config
        per_block = bytes_per_block(mc.num_layers, mc.num_kv_heads, mc.head_dim, self.loaded.dtype,
                                    cfg.block_size)
        budget = cfg.kv_cache_bytes
        if budget is None and self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            # What this process may still take: util x total minus what is already used by anyone.
            budget = int(cfg.gpu_memory_utilization * total - (total - free))
            if budget < per_block:
                raise RuntimeError(f"no GPU memory left for the KV cache (free {free / 2**30:.2f} GiB "
                                   f"of {total / 2**30:.2f} GiB); lower the load or raise "
                                   "gpu_memory_utilization")
        elif budget is None:
            budget = CPU_KV_BYTES_DEFAULT
        return max(1, budget // per_block)

    # ---- requests ------------------------------------------------------------------------------
    def add_request(self, prompt_ids: list[int], params: SamplingParams | None = None,
                    pattern: str | None = None) -> int:
        params = params or SamplingParams()
        rid = self._next_request
        self._next_request += 1
        req = Request(rid, list(prompt_ids), params, arrival_time=self.clock())
        self.requests[rid] = req
        seq = self._new_seq(req, 0)
        error = None
        try:
            seq.pattern = parse_pattern(pattern) if pattern is not None else self.pattern
        except ValueError as e:
            seq.pattern, error = self.pattern, str(e)
        if error is None:
            error = check_prompt(req.prompt_ids, params, seq.pattern, self.model_config.vocab_size,
                                 self.max_model_len, self.bm)
        seq.cacheable = not seq.pattern.evicts
        if error is not None:
            self.finish_sequence(seq, "error", error=error)
        else:
            self.scheduler.add(seq)
        return rid

    def _new_seq(self, req: Request, index: int) -> Sequence:
        seq = Sequence(self._next_seq, req.request_id, list(req.prompt_ids), req.params,
                       sample_index=index, arrival_time=req.arrival_time)
        self._next_seq += 1
        seq.generator = sampling.make_generator(req.params.seed, index, self.device)
        decoder = self.tokenizer.stream_decoder() if self.tokenizer is not None else None
        seq.text = TextState(decoder, req.params.stop)
        req.seqs.append(seq)
        return seq

    def fork_sequence(self, parent: Sequence, index: int) -> Sequence:
        """A new running sequence of `parent`'s request (sample `index`) sharing all its blocks
        and its tokens so far (parallel samples, beam search); writes copy shared blocks first."""
        child = self._new_seq(self.requests[parent.request_id], index)
        child.output_ids = list(parent.output_ids)
        child.pattern, child.cacheable = parent.pattern, parent.cacheable
        child.num_computed = parent.num_computed
        child.num_cached_tokens = parent.num_cached_tokens
        self.bm.fork(parent.seq_id, child.seq_id)
        self.scheduler.add_running(child)
        return child

    def abort(self, request_id: int) -> None:
        req = self.requests.get(request_id)
        if req is None:
            return
        self.beam_groups.pop(request_id, None)
        for seq in req.seqs:
            if not seq.is_finished:
                self.finish_sequence(seq, "abort")

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work() or bool(self._pending)

    def set_pattern(self, spec: str) -> None:
        self.pattern = parse_pattern(spec)

    # ---- one step --------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> StepReport:
        t0 = self.clock()
        sched = self.scheduler.schedule()
        if (not sched.scheduled and not self.scheduler.running and self.scheduler.waiting
                and self.beam_groups and beams.release_parked(self)):
            sched = self.scheduler.schedule()    # parked beams held the blocks the waiting need
        for seq in sched.outgrown:
            if seq.output_ids:
                self.finish_sequence(seq, "length")
            else:
                self.finish_sequence(seq, "error", error=f"sequence of {seq.num_tokens} tokens needs more "
                             f"than the whole KV cache ({self.bm.num_blocks} blocks)")
        for src, dst in sched.copies:
            self.kv.copy_block(src, dst)
        groups: dict[object, list[ScheduledSeq]] = {}
        for item in sched.scheduled:
            groups.setdefault(item.seq.pattern.spec, []).append(item)
        row_seqs: list[Sequence] = []
        row_logits: list[torch.Tensor] = []
        for spec, items in groups.items():
            seqs, logits = self._forward(items, spec)
            if seqs:
                row_seqs += seqs
                row_logits.append(logits)
        logits = (row_logits[0] if len(row_logits) == 1
                  else torch.cat(row_logits) if row_logits else None)              # (N, V) f32
        bm = self.bm
        for item in sched.scheduled:            # runs while the GPU works (no sync yet)
            seq = item.seq
            seq.num_computed = item.end
            bm.touch_written(seq.seq_id, item.start, item.end)
            if bm.has_uncommitted(seq.seq_id, item.end):
                bm.commit(seq.seq_id, seq.all_ids, item.end)
        now = self.clock()
        ttft = self._sample_and_append(row_seqs, logits, now)
        for item in sched.scheduled:
            if not item.seq.is_finished and item.seq.pattern.evicts:
                self._evict(item.seq)
        dt = self.clock() - t0
        outputs, self._pending = self._pending, []
        outputs += collect_outputs(self.requests)
        self._step += 1
        live = self._live_seqs()
        finished, self._finished_reports = self._finished_reports, []
        return StepReport(
            step=self._step, outputs=outputs, num_prefill_tokens=sched.num_prefill_tokens,
            num_decode_tokens=sched.num_decode_tokens, step_time_s=dt,
            prefill_tokens_per_s=sched.num_prefill_tokens / dt if dt > 0 else 0.0,
            decode_tokens_per_s=sched.num_decode_tokens / dt if dt > 0 else 0.0,
            ttft_s=ttft, inter_token_latency_s=dt if sched.num_decode_tokens else 0.0,
            sequences=sequence_reports(self.bm, live) + finished,
            cache=self._cache_report(live, self.config.report_blocks),
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting))

    def _forward(self, items: list[ScheduledSeq], spec) -> tuple[list[Sequence], torch.Tensor | None]:
        """(sequences that get a token, their logits (N, V) float32 in that order)."""
        batch, input_ids = build_batch(items, spec, self.bm, self.device)
        if (self.graph_runner is not None and all(it.is_decode for it in items)
                and self.graph_runner.can_run(batch)):
            logits = self.graph_runner.run(input_ids, batch).clone()                 # (B, V) f32
            return [it.seq for it in items], logits
        hidden = self.model(input_ids, batch, self.kv)                               # (T, H)
        need = [it.seq for it in items if it.needs_logits]
        if not need:
            return [], None
        return need, self.model.compute_logits(hidden[batch.logits_indices])        # (N, V) f32

    def _sample_and_append(self, seqs: list[Sequence], logits: torch.Tensor | None,
                           now: float) -> dict[int, float]:
        if self.beam_groups and seqs:        # beam requests take their rows (model/engine/beam_search.py)
            rows = beams.take_beam_rows(self, list(zip(seqs, logits.unbind(0))))
            seqs = [s for s, _ in rows]
            logits = torch.stack([r for _, r in rows]) if rows else None
        kept: list[Sequence] = []
        rows_idx: list[int] = []             # logits row of each kept sequence
        for i, seq in enumerate(seqs):
            if seq.is_finished:          # aborted meanwhile
                continue
            kept.append(seq)
            rows_idx.append(i)
            req = self.requests[seq.request_id]
            if req.params.n > 1 and not req.forked:
                req.forked = True
                for j in range(1, req.params.n):
                    kept.append(self.fork_sequence(seq, j))
                    rows_idx.append(i)
        if not kept:
            return {}
        if rows_idx != list(range(logits.shape[0])):
            logits = logits[torch.tensor(rows_idx, device=logits.device)]                  # (N, V)
        seqs = kept
        tokens = sampling.sample(logits, [s.params for s in seqs], [s.generator for s in seqs],
                                 [s.all_ids if s.params.repetition_penalty != 1.0 else [] for s in seqs])
        ttft: dict[int, float] = {}
        for seq, tok in zip(seqs, tokens):
            seq.output_ids.append(tok)
            if seq.first_token_time is None:
                seq.first_token_time = now
                ttft.setdefault(seq.request_id, now - seq.arrival_time)
            seq.last_token_time = now
            seq.new_tokens.append(tok)
            self._check_stop(seq, tok)
        return ttft

    def _check_stop(self, seq: Sequence, tok: int) -> None:
        stop = stop_reason(seq, tok, self.model_config.eos_token_ids, self.max_model_len)
        if stop is not None:
            self.finish_sequence(seq, stop[0], flush=stop[1])

    def finish_sequence(self, seq: Sequence, reason: str, error: str | None = None,
                        flush: bool = True) -> None:
        """End `seq` (blocks freed by the scheduler); an abort or error is reported next step."""
        if flush and seq.text is not None:
            seq.delta = seq.delta + seq.text.finish()
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        seq.error = error
        self.release(seq)
        seq.just_finished = True
        if reason in ("abort", "error"):
            self.emit(take_output(seq))

    def release(self, seq: Sequence) -> None:
        """Free a finished sequence's blocks (scheduler.remove), keeping its last SequenceReport
        (block table, cached prompt tokens, KV tokens as they were) for the next StepReport: a
        request that ends within one step is still seen with the blocks it used."""
        self._finished_reports += sequence_reports(self.bm, [seq])
        self.scheduler.remove(seq)

    def emit(self, output: RequestOutput) -> None:
        """Queue an output decided outside the sampler (abort, error, beam results) for the next
        step's report."""
        self._pending.append(output)

    def _evict(self, seq: Sequence) -> None:
        table = self.bm.table(seq.seq_id)
        plan = eviction.plan_eviction(seq.pattern.spec, table, seq.num_computed, self.bm.block_size)
        if plan.empty:
            return
        self.bm.free_logical(seq.seq_id, plan.freed_logical)
        for delta, ids in plan.rerotate:
            eviction.rerotate_keys(self.kv, ids, delta, self.model.rope_cos, self.model.rope_sin)

    # ---- reports and conveniences ----------------------------------------------------------------
    def _live_seqs(self) -> list[Sequence]:
        return [s for req in self.requests.values() for s in req.seqs if not s.is_finished]

    def _cache_report(self, live: list[Sequence], with_blocks: bool = True) -> CacheReport:
        return cache_report(self.bm, live, self.kv.bytes_per_block, self.max_model_len,
                            self.scheduler.num_preemptions, with_blocks)

    def cache_report(self) -> CacheReport:
        return self._cache_report(self._live_seqs())

    def stream(self, prompt_ids: list[int], params: SamplingParams | None = None,
               pattern: str | None = None,
               on_report: Callable[[StepReport], None] | None = None) -> Iterator[RequestOutput]:
        """Run the engine until this request finishes, yielding its outputs as they come."""
        rid = self.add_request(prompt_ids, params, pattern)
        done = False
        while not done:
            report = self.step()
            if on_report is not None:
                on_report(report)
            for out in report.outputs:
                if out.request_id == rid:
                    yield out
            done = rid not in self.requests and not any(o.request_id == rid for o in self._pending)

    def generate(self, prompt_ids: list[int], params: SamplingParams | None = None,
                 on_report: Callable[[StepReport], None] | None = None,
                 pattern: str | None = None) -> list[int]:
        """Token ids of sample 0 (ids of all samples: use `stream`). Raises RequestError on error."""
        ids: list[int] = []
        for out in self.stream(prompt_ids, params, pattern, on_report):
            if out.error:
                raise RequestError(out.error)
            if out.sample_index == 0:
                ids += out.new_token_ids
        return ids

    def add_beam_request(self, prompt_ids: list[int], params: "beams.BeamSearchParams",
                         pattern: str | None = None) -> int:
        """Queue a beam search (see model/engine/beam_search.py); its outputs come when it ends, one
        RequestOutput per hypothesis, best first (sample_index = rank)."""
        return beams.add_beam_request(self, prompt_ids, params, pattern)

    def beam_search(self, prompt_ids: list[int], params: "beams.BeamSearchParams",
                    on_report: Callable[[StepReport], None] | None = None,
                    pattern: str | None = None) -> "list[beams.BeamHypothesis]":
        """Run one beam search to the end: hypotheses best first. Raises RequestError on error."""
        rid = self.add_beam_request(prompt_ids, params, pattern)
        group = self.beam_groups.get(rid)
        while rid in self.requests or any(o.request_id == rid for o in self._pending):
            report = self.step()
            if on_report is not None:
                on_report(report)
            for out in report.outputs:
                if out.request_id == rid and out.error:
                    raise RequestError(out.error)
        return group.results if group is not None else []

    def attention_weights(self, prompt_ids: list[int], layer: int, head: int) -> list[list[float]]:
        """One head's attention matrix over a prompt under the engine's pattern (reference path)."""
        if not prompt_ids:
            raise ValueError("attention_weights needs at least one token")
        probs = self.model.attention_probs(prompt_ids, layer, head, mask=self.pattern.spec,
                                           block_size=self.bm.block_size)
        return probs.float().cpu().tolist()
