"""Beam search on the paged engine: live beams are ordinary engine sequences sharing KV blocks.

A beam request is one engine request whose sequence 0 prefills the prompt. From then on every
engine step runs ONE batched forward of all live beams (beside whatever else the engine serves);
instead of sampling, the model runner returns each beam row's best `(max(2, 1 + #eos)) * k`
log-probabilities (their union holds the best candidates over all rows), they come here
(`BeamGroup.take_row`), and `BeamGroup.advance` (from `end_rows`) does one beam step, following transformers'
`_beam_search` (v5) rule for rule:
1. log-softmax of each live beam's logits, plus the beam's cumulative logprob (float32);
2. the top `(max(2, 1 + #eos)) * k` candidates over all (beam, token) pairs (ties: lower
   beam, then lower token id first);
3. candidates among the first k ranks that end (an EOS id, or max_tokens / the context reached)
   become finished hypotheses scored `cumulative_logprob / generated_len ** length_penalty`
   (generated_len counts the EOS); the best k finished are kept;
4. the best k candidates that do not end become the next live beams.
Stopping: `early_stopping=True` (HF's rule) stops as soon as k finished hypotheses exist;
`early_stopping=False` (HF's heuristic) stops when the best live beam, scored at its current
length, cannot beat the worst kept finished one. Both also stop at max_tokens.

Block sharing: a parent chosen by several candidates keeps its own sequence for the first one;
each other one is a new sequence `BlockManager.fork`ed from it (shares all its blocks, ref counts
go up). The next write into a shared, partly filled last block copies it first (copy-on-write in
the scheduler's `prepare_write`); a full last block is never copied. Beams not chosen are dropped
and their blocks freed by reference count (full prompt blocks stay in the prefix cache).

Beams must stay in step (all of one length). If some live beam has no logits this step
(preempted and recomputing, or left out by the token budget), the beams that have them are
parked (taken out of the scheduler's running list, blocks kept) until the others catch up. If a
step can schedule nothing while requests wait, the parked beams are preempted to free their
blocks (`BeamGroup.on_stall`); when they still cannot all fit, the request ends with an error.
`BeamGroup` is a `SequenceGroup` (model/engine/sequence_group.py): it reaches the engine only
through its `GroupOps` facade (fork, drop, park, unpark, preempt, append, finish, facts).
Not supported: sliding attention patterns (their blocks are freed, they must not be shared),
sampling-based beam search, `early_stopping="never"`. This module changes no model code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.reports import RequestOutput
from llm_playground.model.engine.sampling_params import SamplingParams, as_integer, as_number
from llm_playground.model.engine.sequence import Request, Sequence
from llm_playground.model.engine.sequence_group import GroupOps, SequenceGroup, TopRow
from llm_playground.model.engine.step_plan import LogitsRequest


@dataclass
class BeamSearchParams:
    """How a beam search runs (HF's `generate(num_beams=k, do_sample=False, ...)` knobs)."""
    beam_width: int = 4               # k: live beams and finished hypotheses kept (1 = greedy)
    max_tokens: int = 64              # new tokens at most per hypothesis
    length_penalty: float = 1.0       # score = logprob / len**length_penalty (HF); >0 favours long
    early_stopping: bool = True       # True: stop at k finished (HF True); False: HF's heuristic
    ignore_eos: bool = False          # fixed-length beams (benchmarks)
    stop_token_ids: tuple[int, ...] = ()  # extra ids that end a hypothesis besides the model's EOS

    def __post_init__(self) -> None:
        self.beam_width, self.max_tokens = (as_integer("beam_width", self.beam_width),
                                            as_integer("max_tokens", self.max_tokens))
        self.length_penalty = as_number("length_penalty", self.length_penalty)
        if not math.isfinite(self.length_penalty):
            raise ValueError(f"length_penalty must be finite, got {self.length_penalty}")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be True or False, got {self.ignore_eos!r}")
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {self.beam_width}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not isinstance(self.early_stopping, bool):
            raise ValueError(f"early_stopping must be True or False, got {self.early_stopping!r}")
        self.stop_token_ids = tuple(as_integer("stop_token_ids entry", t) for t in self.stop_token_ids)


@dataclass
class BeamHypothesis:
    """One finished hypothesis of a beam search."""
    token_ids: list[int]              # generated ids (the EOS included when one ended it)
    cumulative_logprob: float         # sum of the log-probabilities of token_ids
    score: float                      # cumulative_logprob / len(token_ids) ** length_penalty
    finish_reason: FinishReason       # END_OF_SEQUENCE, MAX_TOKENS or CONTEXT_FULL




class BeamGroup(SequenceGroup):
    """The beam state of one request; the engine feeds it logits rows (see the module doc)."""

    def __init__(self, params: BeamSearchParams) -> None:
        self.params = params
        self.beams: list[Sequence] = []                   # live beams, best first
        self.scores: list[float] = [0.0]                  # cumulative logprob of each live beam
        self.pending: dict[int, TopRow] = {}              # seq id -> (ids, logprobs) this round
        self.parked: list[Sequence] = []
        self.finished: list[BeamHypothesis] = []          # best first, at most k
        self.done = False
        self.num_forks = 0
        self.released_at: int | None = None               # beam length at the last on_stall release

    @property
    def sampling_params(self) -> SamplingParams:
        """The request's SamplingParams (the engine's own stop rules never fire on beams)."""
        return SamplingParams(max_tokens=self.params.max_tokens, ignore_eos=True)

    def bind(self, request: Request, ops: GroupOps) -> None:
        """Take the request: its sequence 0 is the first beam."""
        super().bind(request, ops)
        eos = () if self.params.ignore_eos else ops.eos_token_ids
        self.eos = frozenset(eos + self.params.stop_token_ids)
        self.beams = [request.seqs[0]]

    def check(self) -> tuple[ErrorKind, str] | None:
        """Sliding patterns and beams wider than the vocabulary allows are refused."""
        seq, V = self.request.seqs[0], self.ops.vocab_size
        if seq.pattern.evicts:
            return ErrorKind.UNSUPPORTED, (f"beam search with the sliding attention pattern "
                                           f"{seq.pattern} is not supported")
        if self.candidates_per_row > V:
            return ErrorKind.UNSUPPORTED, (
                f"beam width {self.params.beam_width} needs {self.candidates_per_row} candidates "
                f"per step, more than the vocabulary of {V}")
        return None

    @property
    def results(self) -> list[BeamHypothesis]:
        """The finished hypotheses, best first."""
        return list(self.finished)

    @property
    def candidates_per_row(self) -> int:
        """How many top log-probabilities each beam row needs (the runner caps it at V)."""
        return max(2, 1 + len(self.eos)) * self.params.beam_width

    def logits_request(self, seq: Sequence) -> LogitsRequest:
        """Beam rows ask for their best log-probabilities, never for draws."""
        return LogitsRequest(top_logprobs=self.candidates_per_row)

    def take_row(self, seq: Sequence, tokens: list[int],
                 top: TopRow | None) -> list[tuple[Sequence, int]]:
        """A beam's (token ids, logprobs) best first, this round; tokens come in `end_rows`."""
        self.pending[seq.seq_id] = top
        return []

    def end_rows(self) -> None:
        """One beam step once every live beam has its row (`advance`)."""
        self.advance()

    def advance(self) -> None:
        """One beam step if every live beam has its logits; otherwise park those that do."""
        live = [s for s in self.beams if not s.is_finished]
        scores = [sc for s, sc in zip(self.beams, self.scores) if not s.is_finished]
        if not live:
            self._finish([])
            return
        if any(s.seq_id not in self.pending for s in live):
            for s in live:
                if s.seq_id in self.pending and self.ops.park(s):
                    self.parked.append(s)
            return
        k, p = self.params.beam_width, self.params
        rows = [self.pending.pop(s.seq_id) for s in live]
        ids = np.concatenate([r[0] for r in rows])                                     # (B * M,)
        beam = np.concatenate([np.full(len(r[0]), b) for b, r in enumerate(rows)])     # (B * M,)
        acc = np.concatenate([r[1].astype(np.float32) + np.float32(sc)
                              for r, sc in zip(rows, scores)])                         # (B * M,) f32
        keep = min(self.candidates_per_row, len(acc))
        order = np.lexsort((ids, beam, -acc))[:keep]                                   # best first
        top_lp = acc[order]                                                            # (keep,) f32
        gen_len = len(live[0].output_ids) + 1            # generated tokens after this step
        top_score = (top_lp / np.float32(gen_len ** p.length_penalty)).tolist()        # HF's f32 rounding
        top_lp_l = top_lp.tolist()
        at_limit = gen_len >= p.max_tokens or live[0].num_tokens + 1 >= self.ops.max_model_len
        running: list[tuple[float, Sequence, int]] = []
        for rank, (lp, j) in enumerate(zip(top_lp_l, order.tolist())):
            parent, tok = live[int(beam[j])], int(ids[j])
            ends = at_limit or tok in self.eos
            if ends and rank < k:
                reason = (FinishReason.END_OF_SEQUENCE if tok in self.eos
                          else FinishReason.CONTEXT_FULL if gen_len < p.max_tokens
                          else FinishReason.MAX_TOKENS)
                self.finished.append(BeamHypothesis(parent.output_ids + [tok], lp, top_score[rank], reason))
            elif not ends and len(running) < k:
                running.append((lp, parent, tok))
        self.finished.sort(key=lambda h: -h.score)       # stable: earlier hypotheses win ties
        del self.finished[k:]
        self._reassign(live, running)
        if not running or self._should_stop(gen_len):
            self._finish([s for s in self.beams if not s.is_finished])

    def _should_stop(self, gen_len: int) -> bool:
        k, p = self.params.beam_width, self.params
        if len(self.finished) < k:
            return False
        if p.early_stopping:
            return True
        best_running = self.scores[0] / (gen_len ** p.length_penalty)
        return not best_running > self.finished[-1].score

    def _reassign(self, live: list[Sequence], running: list[tuple[float, Sequence, int]]) -> None:
        """Keep, fork and drop sequences so that the new beams are `running`, then append tokens."""
        chosen = {parent.seq_id for _, parent, _ in running}
        for s in live:
            if s.seq_id not in chosen:
                self.ops.drop(s)                 # frees its blocks by reference count
        used: set[int] = set()
        targets: list[Sequence] = []
        for _, parent, _ in running:             # forks first: they copy the parent's ids so far
            if parent.seq_id in used:
                targets.append(self.ops.fork(parent, len(self.request.seqs)))
                self.num_forks += 1
            else:
                used.add(parent.seq_id)
                targets.append(parent)
        for seq, (_, _, tok) in zip(targets, running):
            self.ops.append_token(seq, tok)
        for s in self.parked:
            if not s.is_finished:
                self.ops.unpark(s)
        self.parked = []
        self.beams, self.scores = targets, [lp for lp, _, _ in running]
        self.ops.forget_finished()

    def _finish(self, live: list[Sequence]) -> None:
        for s in live + self.parked:
            if not s.is_finished:
                self.ops.drop(s)
        self.parked, self.beams, self.scores, self.done = [], [], [], True
        rid = self.request.request_id
        self.ops.finish_request([RequestOutput(
            request_id=rid, new_token_ids=list(h.token_ids), text_delta=self.ops.decode(h.token_ids),
            finished=True, finish_reason=h.finish_reason, sample_index=rank,
            speculation_refused=self.spec_refusal if rank == 0 else None)
            for rank, h in enumerate(self.finished)])

    def on_stall(self) -> bool:
        """Parked beams hold blocks that the waiting sequences (often their own preempted
        siblings) need, and nothing running will ever free them: preempt the parked beams
        (blocks freed, full ones stay in the prefix cache; they recompute and offer their logits
        again). If already released at the same beam length, its beams cannot all be in the
        cache at once: finish the request with an error. True when it freed something."""
        if not self.parked:
            return False
        length = len(self.parked[0].output_ids)
        if self.released_at == length:
            live = [s for s in self.beams if not s.is_finished]
            blocks = self.ops.blocks_for(self.parked[0].num_tokens + 1)
            for s in live[1:]:                   # the error is reported on the best beam
                self.ops.drop(s)
            self.parked, self.beams, self.done = [], [], True
            self.ops.fail_request(ErrorKind.KV_CACHE_TOO_SMALL, (
                f"beam search of width {self.params.beam_width} needs about "
                f"{len(live) * blocks} KV blocks to keep its beams in step; the cache has "
                f"{self.ops.num_blocks} blocks"))
            return True
        self.released_at = length
        for s in reversed(self.parked):
            self.pending.pop(s.seq_id, None)
            self.ops.preempt(s)
        self.parked = []
        return True
