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
submits the following one, and its ids are applied then, one call late and exactly.
Nothing in this module touches a tensor.

Every request has one `SequenceGroup` (model/engine/sequence_group.py; `self.groups`): it says
what each logits row is for and takes the row's result, changing its sequences only through a
`GroupOps` facade. Plain requests get a `SamplingGroup` (n > 1: the prompt's row is forked into
n samples sharing its blocks, sample i drawing with seed + i), beam search a `BeamGroup`
(model/engine/beam_search.py), callers may pass their own (`add_request(..., group=...)`); the
step has no per-kind branches. Errors in one request (empty prompt, too long, bad ids) finish it
with FinishReason.ERROR and an ErrorKind; the others go on. Request ids: the caller's
(`add_request(..., request_id="chat-3")`) or 0, 1, 2, ... Batch packing: batch_builder.py;
admission checks, stop rules, outputs: request_rules.py. This module does not know about the UI.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from llm_playground.model.engine import eviction, run_ahead, step_faults
from llm_playground.model.engine.batch_builder import plan_batch
from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.cache_report import cache_report, sequence_reports
from llm_playground.model.engine.report_book import ReportBook
from llm_playground.model.engine.config import EngineConfig, blocks_from_budget
from llm_playground.model.engine.model_runner import ModelRunner
from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.beam_search import BeamGroup, BeamHypothesis, BeamSearchParams
from llm_playground.model.engine.sequence_group import GroupOps, SamplingGroup, SequenceGroup
from llm_playground.model.engine.step_faults import InFlight
from llm_playground.model.engine.step_plan import StepPlan, StepResult
from llm_playground.model.engine.reports import CacheReport, RequestOutput, SequenceReport, StepReport
from llm_playground.model.engine.request_rules import (check_prompt, collect_outputs, prompt_list,
                                                      stop_reason, take_output)
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.engine.scheduler import ScheduledSeq, Scheduler
from llm_playground.model.engine.sequence import Request, Sequence, SeqStatus, TextState
from llm_playground.model.engine.attention_patterns import AttentionPattern, parse_pattern


class RequestError(RuntimeError):
    """A request finished with an error (raised by the convenience `generate`)."""


class Engine:
    """Requests, scheduler, blocks and outcomes; the tensors live in `self.runner`."""

    def __init__(self, loaded, config: EngineConfig | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """`loaded` is a weights.loader.LoadedModel; `clock` (seconds, monotonic) times arrivals,
        first tokens and steps: tests inject a fake one to get exact rates."""
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
        # Sequences finished since the last report, as they were before their blocks were freed:
        # the next StepReport lists them (status "finished") beside the live ones.
        self._finished_reports: list[SequenceReport] = []
        self._next_request = 0
        self._next_seq = 0
        self._step = 0
        self.groups: dict[int | str, SequenceGroup] = {}   # request id -> its sequence group
        # Work for the runner's next step: re-rotations decided by this step's evictions, and
        # the random streams of finished requests to forget.
        self._rerotations: list[tuple[int, list[int]]] = []
        self._released_keys: list[tuple[int, int]] = []
        # Overlap scheduling: the step submitted last call whose result is not applied yet
        # (its logits rows and scheduled sequences; None when none is in flight); see `step`.
        self._in_flight: InFlight | None = None
        # Logits rows whose result was dropped because their sequence had finished meanwhile
        # (aborted, or stopped on the token before: the cost of overlap), cumulative.
        self.discarded_rows = 0

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
        (`_fail_steps`, model/engine/step_faults.py)."""
        t0 = self.clock()
        sched = self.scheduler.schedule()
        if not sched.scheduled and not self.scheduler.running and self.scheduler.waiting:
            freed = [g.on_stall() for g in list(self.groups.values())]   # each group is asked
            if any(freed):
                sched = self.scheduler.schedule()    # groups held blocks the waiting need
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
            if not item.seq.is_finished and item.seq.pattern.evicts:
                self._evict(item.seq)
        dt = self.clock() - t0
        outputs, self._pending = self._pending, []
        outputs += collect_outputs(self.requests)
        for rid in [r for r in self.groups if r not in self.requests]:
            del self.groups[rid]                 # the request ended and was reported
        self._step += 1
        finished, self._finished_reports = self._finished_reports, []
        return StepReport(
            step=self._step, outputs=outputs, num_prefill_tokens=sched.num_prefill_tokens,
            num_decode_tokens=sched.num_decode_tokens, step_time_s=dt,
            prefill_tokens_per_s=sched.num_prefill_tokens / dt if dt > 0 else 0.0,
            decode_tokens_per_s=sched.num_decode_tokens / dt if dt > 0 else 0.0,
            ttft_s=ttft, inter_token_latency_s=dt if sched.num_decode_tokens else 0.0,
            sequences=self._book.sequences() + finished,
            cache=self._cache_report(self.config.report_blocks),
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting))

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
        bm, touched = self.bm, self._book.touched
        for item in scheduled:
            seq = item.seq
            touched(seq)
            seq.num_computed = item.end
            bm.touch_written(seq.seq_id, item.start, item.end)
            end = min(item.end, seq.num_tokens)      # a token still on the device is not hashed
            if bm.has_uncommitted(seq.seq_id, end):
                bm.commit(seq.seq_id, seq.all_ids, end)
        if self.overlap:
            run_ahead.mark_run_ahead(rows, self.max_model_len)

    def _plan(self, scheduled: list[ScheduledSeq], copies: list[tuple[int, int]]
              ) -> tuple[StepPlan, list[list]]:
        """The runner's plan for the scheduled sequences, and per logits row (in plan order)
        [sequence, its group (which said what the row is for), the index of the row's first
        draw in the step, whether the sequence runs ahead of the row's result (set later)]."""
        by_mask: dict[object, list[ScheduledSeq]] = {}
        for item in scheduled:
            by_mask.setdefault(item.seq.pattern.spec, []).append(item)
        plan = StepPlan(rerotations=self._rerotations, block_copies=list(copies),
                        released_keys=self._released_keys)
        plan.table_rows, plan.table_data = self.bm.take_table_updates()
        self._rerotations, self._released_keys = [], []
        rows: list[list] = []
        draws = 0
        for spec, items in by_mask.items():
            logits = []
            for it in items:
                if it.needs_logits:
                    group = self.groups[it.seq.request_id]
                    req = group.logits_request(it.seq)
                    logits.append(req)
                    rows.append([it.seq, group, draws, False])
                    draws += len(req.draws)
            plan.batches.append(plan_batch(items, spec, self.bm, logits))
        return plan, rows

    def _fail_steps(self, steps: list[InFlight], plan: StepPlan, error: Exception) -> StepResult:
        """The runner raised in the middle of a step (an exception in the forward pass or in
        sampling, the device out of memory; with overlap, out of `submit` of step N+1 or
        `collect` of step N, so both steps in flight are failed: N+1 may have read N's draws on
        the device, and an asynchronous device error can surface in either call): every request
        with a sequence in those steps finishes with FinishReason.ERROR (ErrorKind.OUT_OF_MEMORY
        or INTERNAL, its text so far kept), the K/V the steps wrote is never cached, their blocks
        are freed, the runner forgets the steps it still holds, and the engine goes on with the
        other requests (model/engine/step_faults.py). Returns the empty result the rows get."""
        kind, message = step_faults.describe(error)
        self.runner.discard_in_flight()
        self._released_keys += plan.released_keys       # the runner may not have forgotten them
        self.bm.resend_table_rows()                     # the device may have missed some rows
        scheduled = [item for step in steps for item in step.scheduled]
        for item in scheduled:
            self.bm.discard_written(item.seq.seq_id, item.start)
        for rid in step_faults.failed_requests(steps):
            self.groups.pop(rid, None)                  # its group gets no more calls
            req = self.requests.get(rid)
            for seq in (req.seqs if req is not None else ()):
                seq.num_pending = 0                     # its tokens on the device are dropped
                if not seq.is_finished:
                    self._finish_sequence(seq, FinishReason.ERROR, error=message, error_kind=kind)
        return StepResult()

    def _apply(self, rows: list[list], result: StepResult,
               now: float) -> dict[int | str, float]:
        """Give each row's result to its group, then append the tokens the groups hand back and
        apply stop rules; returns time to first token per request that got its first token.
        A row of a sequence that finished meanwhile (aborted, or stopped on the token before,
        overlap scheduling) is dropped: its token is never emitted."""
        appended: list[tuple[Sequence, int]] = []
        touched: dict[int, SequenceGroup] = {}
        for r, ((seq, group, _, ahead), toks, top) in enumerate(
                zip(rows, result.tokens, result.top_logprobs)):
            if ahead:
                seq.num_pending -= 1
            if seq.is_finished:          # aborted, or stopped one token earlier (overlap)
                self.discarded_rows += 1
                continue
            pairs = group.take_row(seq, toks, top)
            if result.choices and result.choices[r] is not None:
                _keep_choices(pairs, toks, result.choices[r])
            appended += pairs
            touched.setdefault(id(group), group)
        for group in touched.values():
            group.end_rows()
        ttft: dict[int | str, float] = {}
        for seq, tok in appended:
            seq.output_ids.append(tok)
            if seq.first_token_time is None:
                seq.first_token_time = now
                ttft.setdefault(seq.request_id, now - seq.arrival_time)
            seq.last_token_time = now
            seq.new_tokens.append(tok)
            self._book.touched(seq)
            # A block whose last id was still on the device when it was written (overlap) is
            # hashed into the prefix cache now that its ids are all known.
            end = min(seq.num_computed, seq.num_tokens)
            if self.bm.has_uncommitted(seq.seq_id, end):
                self.bm.commit(seq.seq_id, seq.all_ids, end)
            self._check_stop(seq, tok)
        return ttft

    def _check_stop(self, seq: Sequence, tok: int) -> None:
        stop = stop_reason(seq, tok, self.model_config.eos_token_ids, self.max_model_len)
        if stop is not None:
            self._finish_sequence(seq, stop[0], flush=stop[1])

    def _finish_sequence(self, seq: Sequence, reason: FinishReason, error: str | None = None,
                        flush: bool = True, error_kind: ErrorKind | None = None) -> None:
        """End `seq` (blocks freed by the scheduler); an abort or error is reported next step."""
        if flush and seq.text is not None:
            seq.delta = seq.delta + seq.text.finish()
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = FinishReason(reason)
        seq.error = error
        if seq.finish_reason is FinishReason.ERROR:
            seq.error_kind = ErrorKind(error_kind) if error_kind is not None else ErrorKind.INTERNAL
        self._release(seq)
        seq.just_finished = True
        if seq.finish_reason in (FinishReason.ABORTED, FinishReason.ERROR):
            self._pending.append(take_output(seq))    # reported next step

    def _release(self, seq: Sequence) -> None:
        """Free a finished sequence's blocks (scheduler.remove) and its random stream, keeping
        its last SequenceReport (block table, cached prompt tokens, KV tokens as they were) for
        the next StepReport: a request that ends within one step is still seen with its blocks."""
        self._finished_reports += sequence_reports(self.bm, [seq])
        self._book.released(seq)
        self.scheduler.remove(seq)
        self._released_keys.append((seq.serial, seq.sample_index))

    def _evict(self, seq: Sequence) -> None:
        table = self.bm.table(seq.seq_id)
        plan = eviction.plan_eviction(seq.pattern.spec, table, seq.num_computed, self.bm.block_size)
        if plan.empty:
            return
        self.bm.free_logical(seq.seq_id, plan.freed_logical)
        self._book.touched(seq)
        self._rerotations += [(delta, list(ids)) for delta, ids in plan.rerotate]

    # ---- reports and conveniences ----------------------------------------------------------------
    def _live_seqs(self) -> list[Sequence]:
        return [s for req in self.requests.values() for s in req.seqs if not s.is_finished]

    def _cache_report(self, with_blocks: bool = True) -> CacheReport:
        return cache_report(self.bm, self.kv_bytes_per_block, self._book.reserved,
                            self.scheduler.num_preemptions, with_blocks)

    def cache_report(self) -> CacheReport:
        """The cache as it is now, without stepping."""
        return self._cache_report()

    def iter_outputs(self, prompt_ids: list[int], params: SamplingParams | None = None,
                     pattern: str | None = None,
                     on_report: Callable[[StepReport], None] | None = None) -> Iterator[RequestOutput]:
        """Run the engine until this request finishes, yielding its outputs as they come."""
        yield from self._run(self.add_request(prompt_ids, params, pattern), on_report)

    def _run(self, rid: int | str, on_report) -> Iterator[RequestOutput]:   # steps until rid is done
        while rid in self.requests or any(o.request_id == rid for o in self._pending):
            report = self.step()
            if on_report is not None:
                on_report(report)
            yield from (out for out in report.outputs if out.request_id == rid)

    def generate(self, prompt_ids: list[int], params: SamplingParams | None = None,
                 on_report: Callable[[StepReport], None] | None = None,
                 pattern: str | None = None) -> list[int]:
        """Token ids of sample 0 (ids of all samples: use `iter_outputs`). Raises RequestError on error."""
        ids: list[int] = []
        for out in self.iter_outputs(prompt_ids, params, pattern, on_report):
            if out.error:
                raise RequestError(out.error)
            if out.sample_index == 0:
                ids += out.new_token_ids
        return ids

    def add_beam_request(self, prompt_ids: list[int], params: BeamSearchParams,
                         pattern: str | None = None, request_id: int | str | None = None) -> int | str:
        """Queue a beam search (see model/engine/beam_search.py); its outputs come when it ends, one
        RequestOutput per hypothesis, best first (sample_index = rank)."""
        group = BeamGroup(params)
        return self.add_request(prompt_ids, group.sampling_params, pattern, request_id, group)

    def beam_search(self, prompt_ids: list[int], params: BeamSearchParams,
                    on_report: Callable[[StepReport], None] | None = None,
                    pattern: str | None = None) -> list[BeamHypothesis]:
        """Run one beam search to the end: hypotheses best first. Raises RequestError on error."""
        group = BeamGroup(params)
        rid = self.add_request(prompt_ids, group.sampling_params, pattern, group=group)
        for out in self._run(rid, on_report):
            if out.error:
                raise RequestError(out.error)
        return group.results

    def attention_weights(self, prompt_ids: list[int], layer: int, head: int) -> list[list[float]]:
        """One head's attention matrix over a prompt under the engine's pattern (reference path)."""
        if not prompt_ids:
            raise ValueError("attention_weights needs at least one token")
        return self.runner.attention_weights(prompt_ids, layer, head, self.pattern.spec,
                                             self.bm.block_size)


def _keep_choices(pairs: list[tuple[Sequence, int]], tokens: list[int], choices: list) -> None:
    """Give each appended token its TokenChoice (what the sampler considered), when the group
    appends the row's draws as drawn, in order (SamplingGroup: the row's sequence, then the
    n > 1 fork's children); a group that chooses tokens itself gets none."""
    if len(pairs) == len(tokens) and [t for _, t in pairs] == tokens:
        for (seq, _), choice in zip(pairs, choices):
            if choice is not None:
                seq.new_choices.append(choice)
