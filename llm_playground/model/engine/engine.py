"""The inference engine: requests in, one batched forward per step, tokens and reports out.

`Engine.step()` asks the scheduler (model/engine/scheduler.py) what runs, turns that into a
plain-data `StepPlan` (model/engine/step_plan.py: copy-on-write block copies, one batch plan per
distinct attention mask, decodes first then prefill chunks of any length, and what to draw from
each logits row) and hands it to the `ModelRunner` (model/engine/model_runner.py), which owns
every tensor and returns sampled ids. Then it appends tokens, applies stop rules (EOS, stop ids,
stop strings, max tokens, context end: typed `FinishReason`s, model/engine/outcomes.py), frees
finished sequences, evicts blocks that sliding patterns no longer need (model/engine/eviction.py;
the kept keys are re-rotated by the runner at the start of the next step) and returns a
plain-data `StepReport` (whose `sequences` still list the sequences that finished in the step,
as they were before their blocks were freed; built from state kept current as it changes,
model/engine/report_book.py). With overlap scheduling (EngineConfig.overlap, the rules in
model/engine/run_ahead.py) the step it submits stays in flight while the next call plans and
submits the following one, and its ids are applied then, one call late and exactly. With
speculation (EngineConfig.speculate, model/engine/spec_planner.py) some decodes are widened into
verify rows after scheduling. Nothing in this module touches a tensor.

Every request has one `SequenceGroup` (model/engine/sequence_group.py; `self.groups`): it says
what each logits row is for and takes the row's result, changing its sequences only through a
`GroupOps` facade. Plain requests get a `SamplingGroup` (n > 1: the prompt's row is forked into
n samples sharing its blocks, sample i drawing with seed + i), beam search a `BeamGroup`
(model/engine/beam_search.py), callers may pass their own (`add_request(..., group=...)`); the
step has no per-kind branches. A bad request finishes with FinishReason.ERROR and an ErrorKind;
the others go on. Request ids: the caller's or 0, 1, 2, ... Batch packing: batch_builder.py;
admission checks, stop rules, outputs: request_rules.py. Applying a step's result (appending
tokens, stop rules, finishing and freeing sequences, eviction) lives in step_apply.py, the fault
path in step_faults.py, and the call-and-wait API (`generate`, `iter_outputs`, `beam_search`,
`add_beam_request`, `attention_weights`, `RequestError`) in conveniences.py: `Engine` inherits
them as mixins, so its API is one class. This module does not know about the UI.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from llm_playground.model.engine import run_ahead
from llm_playground.model.engine.batch_builder import group_by_mask, plan_batch
from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.cache_report import cache_report
from llm_playground.model.engine.conveniences import EngineConveniences, RequestError
from llm_playground.model.engine.report_book import ReportBook
from llm_playground.model.engine.config import EngineConfig, blocks_from_budget
from llm_playground.model.engine.model_runner import ModelRunner
from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.sequence_group import GroupOps, SamplingGroup, SequenceGroup
from llm_playground.model.engine.spec_planner import SpecControl, SpecPlanner, speculation_setup
from llm_playground.model.engine.step_apply import StepApply
from llm_playground.model.engine.step_faults import InFlight, StepFaults
from llm_playground.model.engine.step_plan import StepPlan
from llm_playground.model.engine.reports import CacheReport, RequestOutput, SequenceReport, StepReport
from llm_playground.model.engine.request_rules import (check_prompt, collect_outputs, prompt_list)
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.engine.scheduler import ScheduledSeq, Scheduler
from llm_playground.model.engine.sequence import Request, Sequence, SeqStatus, TextState
from llm_playground.model.engine.attention_patterns import AttentionPattern, parse_pattern

# RequestError is defined in conveniences.py; callers import it from here, as before.
__all__ = ["Engine", "RequestError"]


class Engine(StepApply, StepFaults, EngineConveniences, SpecControl):
    """Requests, scheduler, blocks and outcomes; the tensors live in `self.runner`.

    This class admits requests and runs steps; applying a step's result to sequences (stop
    rules, finishing, freeing, eviction) is `StepApply` (model/engine/step_apply.py), a runner
    fault is `StepFaults` (model/engine/step_faults.py), and the call-and-wait API (`generate`,
    `iter_outputs`, `beam_search`, `add_beam_request`, `attention_weights`) is
    `EngineConveniences` (model/engine/conveniences.py); `set_speculate` is `SpecControl`
    (model/engine/spec_planner.py)."""

    def __init__(self, loaded, config: EngineConfig | None = None,
                 clock: Callable[[], float] = time.perf_counter, draft=None) -> None:
        """`loaded` is a weights.loader.LoadedModel; `clock` (seconds, monotonic) times arrivals,
        first tokens and steps: tests inject a fake one to get exact rates. `draft`: the
        LoadedModel of `speculate="draft:PATH:K"` when the caller has it (else PATH is loaded)."""
        self.clock = clock
        self.config = config = config or EngineConfig()
        self.loaded = loaded
        self.model_config = mc = loaded.config
        self.tokenizer = loaded.tokenizer
        self.device_type = str(loaded.device).split(":")[0]      # "cpu" / "cuda"
        self.max_model_len = min(config.max_model_len or mc.max_position, mc.max_position)
        # Overlap scheduling (EngineConfig.overlap): None = where the device runs asynchronously.
        self.overlap = config.overlap if config.overlap is not None else self.device_type == "cuda"
        num_blocks = config.num_blocks or blocks_from_budget(config, mc, loaded.dtype, loaded.device)
        self.bm = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.bm, config.max_num_batched_tokens, config.max_num_seqs,
                                   config.enable_chunked_prefill, self.max_model_len)
        self.pattern: AttentionPattern = parse_pattern(config.attention)
        spec, draft = speculation_setup(config.speculate, loaded, num_blocks, config.block_size,
                                        draft)
        self.runner = ModelRunner(
            loaded.model, num_blocks, config.block_size, loaded.dtype, loaded.device,
            cuda_graphs=config.cuda_graphs, max_num_seqs=config.max_num_seqs,
            max_blocks_per_seq=self.bm.blocks_for(self.max_model_len),
            capture_mask=self.pattern.spec, kv_dtype=config.kv_dtype)
        self.requests: dict[int | str, Request] = {}
        # The live sequences' reports and the reservation total, kept as they change (O(changes)
        # per report, model/engine/report_book.py).
        self._book = ReportBook(self.bm, self.max_model_len)
        self._pending: list[RequestOutput] = []      # outputs decided outside step (abort, errors)
        # Sequences finished since the last report, as they were before their blocks were
        # freed: the next StepReport lists them beside the live ones.
        self._finished_reports: list[SequenceReport] = []
        self._next_request = 0
        self._next_seq = 0
        self._step = 0
        self.groups: dict[int | str, SequenceGroup] = {}   # request id -> its sequence group
        # For the runner's next step: re-rotations (evictions), random streams to forget.
        self._rerotations: list[tuple[int, list[int]]] = []
        self._released_keys: list[tuple[int, int]] = []
        # Overlap: the step submitted last call whose result is not applied yet (see `step`).
        self._in_flight: InFlight | None = None
        # Logits rows dropped: their sequence had finished meanwhile (overlap), cumulative.
        self.discarded_rows = 0
        self.set_speculate(spec, draft)

    @classmethod
    def from_path(cls, path: str | None = None, progress=None, **fields) -> "Engine":
        """Load the model at `path` (None: the default model) into an engine of EngineConfig `fields`."""
        from llm_playground.model.weights.loader import load_model
        config = EngineConfig(**fields)
        loaded = load_model(path, config.dtype, config.device, progress=progress,
                            weights=config.weights, group_size=config.group_size)
        return cls(loaded, config)

    @property
    def kv_bytes_per_block(self) -> int:
        """Bytes one KV block takes over all layers, K and V (the runner's storage)."""
        return self.runner.bytes_per_block

    # ---- requests ------------------------------------------------------------------------------
    def add_request(self, prompt_ids: list[int], params: SamplingParams | None = None,
                    pattern: str | None = None, request_id: int | str | None = None,
                    group: SequenceGroup | None = None) -> int | str:
        """Queue a request; returns its id (the caller's `request_id`, or the next serial number).
        `group` decides what its logits rows are for (default: a SamplingGroup, n samples).
        A bad request is not raised: it finishes with FinishReason.ERROR in the next report.
        A `request_id` that names a live request raises ValueError (nothing is queued)."""
        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        if request_id is not None and (isinstance(request_id, bool)
                                       or not isinstance(request_id, (int, str))):
            raise ValueError(f"request_id must be an int or a str, got {request_id!r:.40}")
        serial = self._next_request
        rid = serial if request_id is None else request_id
        if rid in self.requests or any(o.request_id == rid for o in self._pending):
            raise ValueError(f"request id {rid!r} is already in use by a live request")
        self._next_request += 1
        prompt, error = prompt_list(prompt_ids)
        req = Request(rid, serial, prompt, params, arrival_time=self.clock())
        self.requests[rid] = req
        seq = self._new_seq(req, 0)
        group = group if group is not None else SamplingGroup()
        self.groups[rid] = group
        group.bind(req, GroupOps(self, req))
        try:
            seq.pattern = parse_pattern(pattern) if pattern is not None else self.pattern
        except ValueError as e:
            seq.pattern, error = self.pattern, error or (ErrorKind.INVALID_REQUEST, str(e))
        if error is None:
            error = check_prompt(req.prompt_ids, params, seq.pattern, self.model_config.vocab_size,
                                 self.max_model_len, self.bm) or group.check()
        seq.cacheable = not seq.pattern.evicts
        if error is not None:
            self._finish_sequence(seq, FinishReason.ERROR, error=error[1], error_kind=error[0])
        else:
            self.scheduler.add(seq)
        return rid

    def _new_seq(self, req: Request, index: int) -> Sequence:
        seq = Sequence(self._next_seq, req.request_id, list(req.prompt_ids), req.params,
                       sample_index=index, arrival_time=req.arrival_time, serial=req.serial)
        self._next_seq += 1
        decoder = self.tokenizer.incremental_decoder() if self.tokenizer is not None else None
        seq.text = TextState(decoder, req.params.stop)
        req.seqs.append(seq)
        self._book.added(seq)
        return seq

    def abort(self, request_id: int | str) -> None:
        """End a request now (FinishReason.ABORTED, its text so far kept); unknown ids are ignored."""
        req = self.requests.get(request_id)
        if req is None:
            return
        self.groups.pop(request_id, None)     # its group gets no more calls
        for seq in req.seqs:
            if not seq.is_finished:
                self._finish_sequence(seq, FinishReason.ABORTED)

    def has_unfinished(self) -> bool:
        """True while some request has work left, an output not yet reported, or a step is in
        flight (overlap scheduling: its result is applied by the next `step`)."""
        return self.scheduler.has_work() or bool(self._pending) or self._in_flight is not None

    def set_pattern(self, spec: str) -> None:
        """The attention pattern of requests added from now on (`dense`, `local:W`, ...)."""
        self.pattern = parse_pattern(spec)
        self.runner.capture_graphs(self.pattern.spec)

    # ---- one step --------------------------------------------------------------------------------
    def step(self) -> StepReport:
        """Schedule, run one step on the runner, apply its tokens; returns the plain-data report.

        With overlap (EngineConfig.overlap) the step submitted here stays in flight when
        there is more to plan without its result: the next call plans step N+1 (a decode whose
        token is still on the device names it in the plan), submits it, and only then applies
        step N's ids (stop rules, streaming, frees); a sequence that stopped on step N's token
        has its step-N+1 row discarded. So outputs come one call late and are exact. Rows whose
        group must see the ids before going on (`SequenceGroup.can_run_ahead`: a group that
        picks tokens itself, the n > 1 fork, repetition penalties) and rows whose token is the
        last by length wait instead:
        when nothing else can run, the step is collected in the same call, as without overlap.
        The report's token counts and step time are this call's (the step it scheduled); its
        outputs and time-to-first-token are those of the steps it applied. An exception out of
        the runner fails the requests of every step in flight, the engine goes on
        (`_fail_steps`, model/engine/step_faults.py); the ids are applied by `_apply`
        (model/engine/step_apply.py)."""
        t0 = self.clock()
        sched = self.scheduler.schedule()
        if not sched.scheduled and not self.scheduler.running and self.scheduler.waiting:
            freed = [g.on_stall() for g in list(self.groups.values())]   # each group is asked
            if any(freed):
                sched = self.scheduler.schedule()    # groups held blocks the waiting need
        spec_before = SpecPlanner.extend_step(self.spec_planner, sched, self.groups)  # verify rows
        # A sequence whose last token is still on its way (overlap) ends once that token landed.
        outgrown_late = [s for s in sched.outgrown if s.num_pending]
        for seq in sched.outgrown:
            if not seq.num_pending:
                self._end_outgrown(seq)
        for seq in sched.preempted:
            self._book.touched(seq)
        plan, rows = self._plan(sched.scheduled, sched.copies)
        submitted = bool(sched.scheduled or plan.rerotations or plan.block_copies
                         or plan.released_keys or len(plan.table_rows))
        current = InFlight(rows, sched.scheduled)
        prev, self._in_flight = self._in_flight, None
        prev_result = None
        try:
            if submitted:
                self.runner.submit(plan)
                self._after_submit(sched.scheduled, rows)   # runs while the device works (no sync)
            prev_result = self.runner.collect() if prev is not None else None
        except Exception as error:    # a fault on the device: both steps' requests fail, not the engine
            self._fail_steps([s for s in (prev, current if submitted else None) if s is not None],
                             plan, error)
            prev, submitted = None, False
        now = self.clock()
        ttft = self._apply(prev.rows, prev_result, now) if prev is not None else {}
        if submitted:
            if self.overlap and run_ahead.has_ready_work(self.scheduler):
                self._in_flight = current            # applied by the next call
            else:
                try:
                    result = self.runner.collect()
                except Exception as error:  # a fault on the device: this step's requests fail
                    result = self._fail_steps([current], plan, error)
                ttft.update(self._apply(rows, result, now))
        for seq in outgrown_late:
            if not seq.is_finished:              # its last token did not stop it
                self._end_outgrown(seq)
        for item in sched.scheduled:
            seq = item.seq
            if seq.pattern.evicts and seq.status is not SeqStatus.FINISHED:
                self._evict(seq)
        dt = self.clock() - t0
        outputs, self._pending = self._pending, []
        outputs += collect_outputs(self.requests)
        for rid in [r for r in self.groups if r not in self.requests]:
            del self.groups[rid]                 # the request ended and was reported
        self._step += 1
        finished, self._finished_reports = self._finished_reports, []
        n_prefill, n_decode = sched.num_prefill_tokens, sched.num_decode_tokens
        return StepReport(
            step=self._step, outputs=outputs, num_prefill_tokens=n_prefill,
            num_decode_tokens=n_decode, step_time_s=dt,
            prefill_tokens_per_s=n_prefill / dt if dt > 0 else 0.0,
            decode_tokens_per_s=n_decode / dt if dt > 0 else 0.0,
            ttft_s=ttft, inter_token_latency_s=dt if n_decode else 0.0,
            sequences=self._book.sequences() + finished,
            cache=self._cache_report(self.config.report_blocks),
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
            **SpecPlanner.report_fields(self.spec_planner, spec_before))

    def _end_outgrown(self, seq: Sequence) -> None:
        """Finish a sequence the scheduler found to need more than the whole KV cache."""
        if seq.output_ids:
            self._finish_sequence(seq, FinishReason.KV_CACHE_FULL)
        else:
            self._finish_sequence(seq, FinishReason.ERROR, error_kind=ErrorKind.KV_CACHE_TOO_SMALL,
                                  error=f"sequence of {seq.num_tokens} tokens needs more "
                                  f"than the whole KV cache ({self.bm.num_blocks} blocks)")

    def _after_submit(self, scheduled: list[ScheduledSeq], rows: list[list]) -> None:
        """Bookkeeping of a submitted step: computed counts, written blocks, prefix-cache
        commits of full blocks whose ids are all on the host; with overlap, mark the rows whose
        sequences decode their drawn token next step without waiting for it (run_ahead.py)."""
        bm, has_uncommitted = self.bm, self.bm.has_uncommitted
        self._book.touched_all([item.seq for item in scheduled])
        for item in scheduled:
            seq = item.seq
            # a verify row's proposals count once accepted (SpecPlanner.landed)
            seq.num_computed = item.end if item.spec is None else item.start + 1
            bm.touch_written(seq.seq_id, item.start, item.end)
            if has_uncommitted(seq.seq_id, item.end):     # (monotonic: the common no first)
                end = min(item.end, seq.num_tokens)  # a token still on the device is not hashed
                if has_uncommitted(seq.seq_id, end):
                    bm.commit(seq.seq_id, seq.all_ids, end)
        if self.overlap:
            run_ahead.mark_run_ahead(rows, self.max_model_len, self.spec_planner)

    def _plan(self, scheduled: list[ScheduledSeq], copies: list[tuple[int, int]]
              ) -> tuple[StepPlan, list[list]]:
        """The runner's plan for the scheduled sequences, and per logits row (in plan order)
        [sequence, its group (which said what the row is for), the index of the row's first
        draw in the step, whether the sequence runs ahead of the row's result (set later)]."""
        by_mask = group_by_mask(scheduled)
        plan = StepPlan(rerotations=self._rerotations, block_copies=list(copies),
                        released_keys=self._released_keys)
        plan.table_rows, plan.table_data = self.bm.take_table_updates()
        self._rerotations, self._released_keys = [], []
        rows: list[list] = []
        draws = 0
        groups = self.groups
        for spec, items in by_mask.items():
            logits = []
            for it in items:
                if it.needs_logits:
                    seq = it.seq
                    group = groups[seq.request_id]
                    req = group.logits_request(seq)
                    logits.append(req)
                    rows.append([seq, group, draws, False])
                    draws += len(req.draws)
            plan.batches.append(plan_batch(items, spec, self.bm, logits))
        return plan, rows

    # ---- reports ------------------------------------------------------------------------------
    def _live_seqs(self) -> list[Sequence]:
        return [s for req in self.requests.values() for s in req.seqs if not s.is_finished]

    def _cache_report(self, with_blocks: bool = True) -> CacheReport:
        return cache_report(self.bm, self.kv_bytes_per_block, self._book.reserved,
                            self.scheduler.num_preemptions, with_blocks)

    def cache_report(self) -> CacheReport:
        """The cache as it is now, without stepping."""
        return self._cache_report()
