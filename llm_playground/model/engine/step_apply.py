"""Applying a step's result to sequences: tokens appended, stop rules, finishing, freeing, eviction.

`StepApply` is a mixin of `Engine` (model/engine/engine.py): `Engine.step` calls `_apply` with
the logits rows of a step (per row [sequence, group, index of its first draw, runs ahead], from
`Engine._plan`) and the runner's `StepResult`. Each row's result goes to its sequence group
(model/engine/sequence_group.py), which hands back the (sequence, token) pairs to append; each
appended token is streamed (`new_tokens`, `new_choices`), timed (first / last token), committed
to the prefix cache where its block is now fully known, and checked against the stop rules
(model/engine/request_rules.py: EOS, stop ids, stop strings, max tokens, context end).
`_finish_sequence` ends a sequence with a typed `FinishReason` (model/engine/outcomes.py) and
`_release` frees its blocks, keeping its last SequenceReport for the next StepReport; `_evict`
frees the blocks a sliding attention pattern no longer needs (model/engine/eviction.py) and
queues their re-rotation for the runner's next step.

It uses these engine attributes: `bm`, `scheduler`, `model_config`, `max_model_len`, `_book`,
`_pending`, `_finished_reports`, `_released_keys`, `_rerotations`, `discarded_rows`. It does not
schedule, plan or run a step, does not handle runner faults (model/engine/step_faults.py), and
touches no tensor.
"""
from __future__ import annotations

from llm_playground.model.engine import eviction
from llm_playground.model.engine.cache_report import sequence_reports
from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.request_rules import stop_reason, take_output
from llm_playground.model.engine.sequence import Sequence, SeqStatus
from llm_playground.model.engine.sequence_group import SequenceGroup
from llm_playground.model.engine.step_plan import StepResult

_FINISHED = SeqStatus.FINISHED     # a module constant: read per row and per token


class StepApply:
    """Engine mixin: a step's sampled ids into sequences, and sequences out of the engine."""

    def _apply(self, rows: list[list], result: StepResult,
               now: float) -> dict[int | str, float]:
        """Give each row's result to its group, then append the tokens the groups hand back and
        apply stop rules; returns time to first token per request that got its first token.
        A row of a sequence that finished meanwhile (aborted, or stopped on the token before,
        overlap scheduling) is dropped: its token is never emitted."""
        appended: list[tuple[Sequence, int]] = []
        touched: dict[int, SequenceGroup] = {}
        verified: list[tuple[Sequence, int]] = []       # (sequence, proposals accepted)
        spec = self.spec_planner
        # per appended token: an accepted proposal (speculation only; else not kept)
        flags: list[bool] | None = [] if spec is not None else None
        choices = result.choices
        # per appended token: its TokenChoice or None (only in a step where some row has them)
        picks: list | None = [] if choices else None
        for r, ((seq, group, _, ahead), toks, top) in enumerate(
                zip(rows, result.tokens, result.top_logprobs)):
            if ahead:
                seq.num_pending -= 1
            if seq.status is _FINISHED:  # aborted, or stopped one token earlier (overlap)
                self.discarded_rows += 1
                seq.spec_k = 0
                continue
            if seq.spec_k:               # a verification: m accepted proposals, then one more
                verified.append((seq, len(toks) - 1))
                if flags is not None:
                    flags += [True] * (len(toks) - 1) + [False]
                pairs = [(seq, t) for t in toks]
            else:
                pairs = group.take_row(seq, toks, top)
                if flags is not None:
                    flags += [False] * len(pairs)
                if group.wants_end_rows:
                    touched[id(group)] = group
            if picks is not None:
                picks += _choices_of(pairs, toks, choices[r])
            appended += pairs
        for group in touched.values():
            group.end_rows()
        ttft: dict[int | str, float] = {}
        bm, has_uncommitted = self.bm, self.bm.has_uncommitted
        eos, max_len = self.model_config.eos_token_ids, self.max_model_len
        self._book.touched_all([seq for seq, _ in appended])
        for k, (seq, tok) in enumerate(appended):
            if seq.status is _FINISHED:  # stopped on an earlier token of its verify row
                continue
            seq.output_ids.append(tok)
            if picks is not None and picks[k] is not None:
                seq.new_choices.append(picks[k])
            if flags is not None:
                seq.new_spec.append(flags[k])
            if seq.first_token_time is None:
                seq.first_token_time = now
                if seq.request_id not in ttft:
                    ttft[seq.request_id] = now - seq.arrival_time
            seq.last_token_time = now
            seq.new_tokens.append(tok)
            # A block whose last id was still on the device when it was written (overlap) is
            # hashed into the prefix cache now that its ids are all known (has_uncommitted
            # grows with its count: asked at num_computed first, the common no).
            if has_uncommitted(seq.seq_id, seq.num_computed):
                end = min(seq.num_computed, seq.num_tokens)
                if has_uncommitted(seq.seq_id, end):
                    bm.commit(seq.seq_id, seq.all_ids, end)
            stop = stop_reason(seq, tok, eos, max_len)
            if stop is not None:
                self._finish_sequence(seq, stop[0], flush=stop[1])
        for seq, accepted in verified:
            spec.landed(seq, accepted)   # K/V past the accepted tokens rolled back
            end = min(seq.num_computed, seq.num_tokens)
            if not seq.is_finished and self.bm.has_uncommitted(seq.seq_id, end):
                self.bm.commit(seq.seq_id, seq.all_ids, end)
        return ttft

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
        if self.spec_planner is not None:
            self.spec_planner.forget(seq)
        self._released_keys.append((seq.serial, seq.sample_index))

    def _evict(self, seq: Sequence) -> None:
        table = self.bm.table(seq.seq_id)
        plan = eviction.plan_eviction(seq.pattern.spec, table, seq.num_computed, self.bm.block_size)
        if plan.empty:
            return
        self.bm.free_logical(seq.seq_id, plan.freed_logical)
        self._book.touched(seq)
        self._rerotations += [(delta, list(ids)) for delta, ids in plan.rerotate]


def _choices_of(pairs: list[tuple[Sequence, int]], tokens: list[int], choices: list | None
                ) -> list:
    """Per appended pair its TokenChoice (what the sampler considered) or None: the row's
    choices when the group appends the row's tokens as drawn, in order (SamplingGroup: the
    row's sequence, then the n > 1 fork's children; a verification: its m + 1 emitted ids);
    a group that chooses tokens itself gets none."""
    if choices is not None and len(pairs) == len(tokens) and [t for _, t in pairs] == tokens:
        return list(choices)
    return [None] * len(pairs)
