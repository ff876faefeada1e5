"""Sequence groups: what one request does with its logits rows, behind a narrow engine facade.

The engine owns one `SequenceGroup` per request (`Engine.groups`, keyed by request id). Each
step, for every scheduled sequence whose logits are computed, the engine asks the sequence's
group what that row is for (`logits_request`: draws to sample, or top log-probabilities), and
after the runner's step hands each row's result back (`take_row`, then `end_rows` once per
group that got rows). `take_row` returns the (sequence, token) pairs the engine appends with
its ordinary rules (streamed output, stop rules, finish reasons); a group that chooses tokens
itself (beam search) appends them through the facade instead and reports when it ends.

A group changes sequences only through its `GroupOps` (given by the engine at `bind`): fork a
sequence (a new one sharing all its blocks, copy-on-write), drop one (not an outcome: its blocks
are freed), park / unpark (out of / back into the scheduler's running set, blocks kept), preempt
(blocks freed, back to the front of the waiting queue), append a token silently, finish the
request with outputs or an error; and it reads a few facts (EOS ids, max_model_len, vocabulary,
blocks for n tokens, total blocks, tokenizer decode). `on_stall` is asked when a step could
schedule nothing although requests wait (a group holding parked sequences frees them).

Two groups ship: `SamplingGroup` (every plain request: n >= 1 samples; sample 0 prefills the
prompt and, when its logits arrive, is forked into n - 1 children that each draw their first token
from the same row with their own random stream, seed + sample index) and `BeamGroup`
(model/engine/beam_search.py). This module does not schedule, allocate blocks or run the model,
and a group never sees tensors: rows are plain ids and numpy arrays (model/engine/step_plan.py).
"""
from __future__ import annotations

import numpy as np

from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.reports import RequestOutput
from llm_playground.model.engine.sequence import Request, Sequence, SeqStatus
from llm_playground.model.engine.step_plan import Draw, LogitsRequest

TopRow = tuple[np.ndarray, np.ndarray]      # (token ids, logprobs), best first


class GroupOps:
    """The one door from a group to the engine, for one request. Made by the engine; groups
    call only these methods and read only these facts."""

    def __init__(self, engine, request: Request) -> None:
        self._engine = engine
        self._request = request

    # ---- facts (read-only) -------------------------------------------------------------------
    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The model's end-of-sequence ids."""
        return tuple(self._engine.model_config.eos_token_ids)

    @property
    def max_model_len(self) -> int:
        """Context length in tokens (prompt + output) a sequence may reach."""
        return self._engine.max_model_len

    @property
    def vocab_size(self) -> int:
        """Size of the model's vocabulary (logits row length)."""
        return self._engine.model_config.vocab_size

    @property
    def num_blocks(self) -> int:
        """KV blocks in the whole cache."""
        return self._engine.bm.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        """KV blocks that `num_tokens` tokens take."""
        return self._engine.bm.blocks_for(num_tokens)

    def decode(self, ids: list[int]) -> str:
        """Text of `ids` ('' when the model has no tokenizer)."""
        tok = self._engine.tokenizer
        return tok.decode(ids) if tok is not None else ""

    # ---- changes ---------------------------------------------------------------------------
    def fork(self, parent: Sequence, index: int) -> Sequence:
        """A new running sequence (sample `index`) sharing all of `parent`'s blocks and tokens
        so far; the next write into a shared, partly filled block copies it first."""
        e = self._engine
        child = e._new_seq(self._request, index)
        child.output_ids = list(parent.output_ids)
        child.pattern, child.cacheable = parent.pattern, parent.cacheable
        child.num_computed = parent.num_computed
        child.draft_computed = parent.draft_computed
        child.num_cached_tokens = parent.num_cached_tokens
        e.bm.fork(parent.seq_id, child.seq_id)
        e.scheduler.add_running(child)
        return child

    def append_token(self, seq: Sequence, token: int) -> None:
        """Append a token the group chose, without stop rules or streamed output."""
        seq.output_ids.append(token)
        self._engine._book.touched(seq)

    def drop(self, seq: Sequence) -> None:
        """End `seq` without an outcome (a beam not kept): its blocks are freed by ref count."""
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = None
        self._engine._release(seq)

    def park(self, seq: Sequence) -> bool:
        """Take a running `seq` out of the running set, blocks kept; False if it was not running."""
        running = self._engine.scheduler.running
        if seq not in running:
            return False
        running.remove(seq)
        return True

    def unpark(self, seq: Sequence) -> None:
        """Put a parked `seq` back into the running set."""
        self._engine.scheduler.add_running(seq)

    def preempt(self, seq: Sequence) -> None:
        """Free `seq`'s blocks (full ones stay cached) and queue it at the front to recompute."""
        sched = self._engine.scheduler
        if seq in sched.running:
            sched.preempt(seq)
        else:
            sched.requeue(seq)
        self._engine._book.touched(seq)

    def forget_finished(self) -> None:
        """Forget the request's finished sequences that have nothing left to report."""
        self._request.seqs = [s for s in self._request.seqs
                              if not s.is_finished or s.new_tokens or s.just_finished]

    def finish_request(self, outputs: list[RequestOutput]) -> None:
        """Drop every live sequence of the request and report `outputs` (next step's report)."""
        for s in self._request.seqs:
            if not s.is_finished:
                self.drop(s)
        self.forget_finished()
        self._engine._pending.extend(outputs)

    def fail_request(self, kind: ErrorKind, message: str) -> None:
        """End the request with FinishReason.ERROR (kind, message); its other sequences are dropped."""
        live = [s for s in self._request.seqs if not s.is_finished]
        for s in live[1:]:
            self.drop(s)
        if live:
            self._engine._finish_sequence(live[0], FinishReason.ERROR, error=message, error_kind=kind)


class SequenceGroup:
    """The sequences of one request and what they ask of their logits rows (module doc).
    Subclass and pass an instance as `Engine.add_request(..., group=...)`."""

    request: Request
    ops: GroupOps
    # Why the group's rows decode without speculation while the engine speculates, for a group
    # that reports its outputs itself (beam search); set by model/engine/spec_planner.py.
    spec_refusal: str | None = None
    # Whether the class overrides `end_rows` (set for every subclass): the engine calls it only
    # then, and skips the bookkeeping per row of groups whose end_rows does nothing.
    wants_end_rows = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.wants_end_rows = cls.end_rows is not SequenceGroup.end_rows

    def bind(self, request: Request, ops: GroupOps) -> None:
        """Called once by the engine when the request is added (sequence 0 exists, not yet run)."""
        self.request, self.ops = request, ops

    def check(self) -> tuple[ErrorKind, str] | None:
        """Why this group cannot serve its request (checked after the prompt's own checks), or None."""
        return None

    def logits_request(self, seq: Sequence) -> LogitsRequest:
        """What to do with `seq`'s logits row this step."""
        raise NotImplementedError

    def take_row(self, seq: Sequence, tokens: list[int],
                 top: TopRow | None) -> list[tuple[Sequence, int]]:
        """The runner's result for `seq`'s row (one token per draw; top log-probabilities if
        asked). Returns the (sequence, token) pairs the engine appends with its stop rules."""
        raise NotImplementedError

    def end_rows(self) -> None:
        """All of this step's rows of the group were taken (called once per group that got rows)."""

    def can_run_ahead(self, seq: Sequence) -> bool:
        """Overlap scheduling: may `seq` decode its next token before this step's result for its
        row is taken (the engine plans the next step while the device still runs this one, and
        feeds the drawn id to the device there)? Only when the row's one draw is `seq`'s own
        next token and nothing the next plan says depends on it. Default False: the engine
        waits for the result, as a group that chooses tokens itself (beam search) needs."""
        return False

    def on_stall(self) -> bool:
        """A step could schedule nothing while requests wait: free what the group holds back
        (parked sequences). Returns True when it freed something."""
        return False


class SamplingGroup(SequenceGroup):
    """Plain sampling of n >= 1 samples: sample 0's prompt row draws all n first tokens and is
    forked into n - 1 children (sample i draws with seed + i, like a lone request)."""

    def __init__(self) -> None:
        self.forked = False
        # seq_id -> its row's request once it is the same every step (its own one draw, no
        # repetition penalty): built once, not per sequence per step. Nobody mutates a plan's
        # LogitsRequest (the runner only reads it).
        self._steady: dict[int, LogitsRequest] = {}

    def logits_request(self, seq: Sequence) -> LogitsRequest:
        """Draws for `seq`'s row: all n samples on the unforked prompt row, else its own."""
        p = seq.params
        if p.repetition_penalty == 1.0 and (p.n == 1 or self.forked):
            steady = self._steady
            req = steady[seq.seq_id] if seq.seq_id in steady else None
            if req is None:
                j = seq.sample_index
                req = self._steady[seq.seq_id] = LogitsRequest(
                    draws=[Draw((seq.serial, j), p, p.seed, j)])
            return req
        indices = range(p.n) if p.n > 1 and not self.forked else (seq.sample_index,)
        seen = tuple(seq.all_ids) if p.repetition_penalty != 1.0 else ()
        return LogitsRequest(draws=[Draw((seq.serial, j), p, p.seed, j, seen) for j in indices])

    def can_run_ahead(self, seq: Sequence) -> bool:
        """True unless the row forks the n > 1 samples (the children are made from its
        result) or the repetition penalty needs the drawn id on the host for the next draw."""
        return (self.forked or seq.params.n == 1) and seq.params.repetition_penalty == 1.0

    def take_row(self, seq: Sequence, tokens: list[int],
                 top: TopRow | None) -> list[tuple[Sequence, int]]:
        """One token for `seq`, or (the prompt row of n > 1) one for it and each new child."""
        if len(tokens) == 1:
            return [(seq, tokens[0])]
        self.forked = True
        return [(seq, tokens[0])] + [(self.ops.fork(seq, j), tok) for j, tok in enumerate(tokens[1:], 1)]
