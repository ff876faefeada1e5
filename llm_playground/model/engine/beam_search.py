"""Beam search on the paged engine: live beams are ordinary engine sequences sharing KV blocks.

A beam request is one engine request whose sequence 0 prefills the prompt. From then on every
engine step runs ONE batched forward of all live beams (beside whatever else the engine serves);
instead of sampling, the model runner returns each beam row's best `(max(2, 1 + #eos)) * k`
log-probabilities (their union holds the best candidates over all rows), they come here
(`take_beam_rows`), and `BeamGroup.advance` does one beam step, following transformers'
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
blocks (`release_parked`); when they still cannot all fit, the request ends with an error.
Not supported: sliding attention patterns (their blocks are freed, they must not be shared),
sampling-based beam search, `early_stopping="never"`. This module changes no model code.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.reports import RequestOutput
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.engine.sequence import Request, Sequence, SeqStatus


@dataclass
class BeamSearchParams:
    beam_width: int = 4               # k: live beams and finished hypotheses kept (1 = greedy)
    max_tokens: int = 64              # new tokens at most per hypothesis
    length_penalty: float = 1.0       # score = logprob / len**length_penalty (HF); >0 favours long
    early_stopping: bool = True       # True: stop at k finished (HF True); False: HF's heuristic
    ignore_eos: bool = False          # fixed-length beams (benchmarks)
    stop_token_ids: tuple[int, ...] = ()  # extra ids that end a hypothesis besides the model's EOS

    def __post_init__(self) -> None:
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {self.beam_width}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not isinstance(self.early_stopping, bool):
            raise ValueError(f"early_stopping must be True or False, got {self.early_stopping!r}")
        self.length_penalty = float(self.length_penalty)
        self.stop_token_ids = tuple(int(t) for t in self.stop_token_ids)


@dataclass
class BeamHypothesis:
    token_ids: list[int]              # generated ids (the EOS included when one ended it)
    cumulative_logprob: float         # sum of the log-probabilities of token_ids
    score: float                      # cumulative_logprob / len(token_ids) ** length_penalty
    finish_reason: FinishReason       # END_OF_SEQUENCE, MAX_TOKENS or CONTEXT_FULL


class BeamGroup:
    """The beam state of one request; the engine feeds it logits rows (see the module doc)."""

    def __init__(self, engine, request: Request, params: BeamSearchParams) -> None:
        self.engine = engine
        self.request = request
        self.params = params
        eos = () if params.ignore_eos else tuple(engine.model_config.eos_token_ids)
        self.eos = frozenset(eos + params.stop_token_ids)
        self.beams: list[Sequence] = [request.seqs[0]]    # live beams, best first
        self.scores: list[float] = [0.0]                  # cumulative logprob of each live beam
        self.pending: dict[int, tuple] = {}               # seq id -> (ids, logprobs) this round
        self.parked: list[Sequence] = []
        self.finished: list[BeamHypothesis] = []          # best first, at most k
        self.done = False
        self.num_forks = 0
        self.released_at: int | None = None               # beam length at the last release_parked

    @property
    def results(self) -> list[BeamHypothesis]:
        return list(self.finished)

    @property
    def candidates_per_row(self) -> int:
        """How many top log-probabilities each beam row needs (the runner caps it at V)."""
        return max(2, 1 + len(self.eos)) * self.params.beam_width

    def offer(self, seq: Sequence, row: tuple[np.ndarray, np.ndarray]) -> None:
        """A beam's (token ids, logprobs) best first, this round."""
        self.pending[seq.seq_id] = row

    def advance(self) -> None:
        """One beam step if every live beam has its logits; otherwise park those that do."""
        live = [s for s in self.beams if not s.is_finished]
        scores = [sc for s, sc in zip(self.beams, self.scores) if not s.is_finished]
        if not live:
            self._finish([])
            return
        if any(s.seq_id not in self.pending for s in live):
            for s in live:
                if s.seq_id in self.pending and s in self.engine.scheduler.running:
                    self.engine.scheduler.running.remove(s)
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
        at_limit = gen_len >= p.max_tokens or live[0].num_tokens + 1 >= self.engine.max_model_len
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
                self._drop(s)
        used: set[int] = set()
        targets: list[Sequence] = []
        for _, parent, _ in running:             # forks first: they copy the parent's ids so far
            if parent.seq_id in used:
                targets.append(self._fork(parent))
            else:
                used.add(parent.seq_id)
                targets.append(parent)
        for seq, (_, _, tok) in zip(targets, running):
            seq.output_ids.append(tok)
        for s in self.parked:
            if not s.is_finished:
                self.engine.scheduler.add_running(s)
        self.parked = []
        self.beams, self.scores = targets, [lp for lp, _, _ in running]
        self.request.seqs = [s for s in self.request.seqs if not s.is_finished]

    def _fork(self, parent: Sequence) -> Sequence:
        child = self.engine.fork_sequence(parent, len(self.request.seqs))
        self.num_forks += 1
        return child

    def _drop(self, seq: Sequence) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = None                 # not an outcome: the beam was not kept
        self.engine.release(seq)                 # frees its blocks by reference count

    def _finish(self, live: list[Sequence]) -> None:
        for s in live:
            self._drop(s)
        for s in self.parked:
            if not s.is_finished:
                self._drop(s)
        self.parked, self.beams, self.scores, self.done = [], [], [], True
        self.request.seqs = [s for s in self.request.seqs if not s.is_finished]
        tok = self.engine.tokenizer
        for rank, h in enumerate(self.finished):
            self.engine.emit(RequestOutput(
                request_id=self.request.request_id, new_token_ids=list(h.token_ids),
                text_delta=tok.decode(h.token_ids) if tok is not None else "", finished=True,
                finish_reason=h.finish_reason, sample_index=rank))
        self.engine.beam_groups.pop(self.request.request_id, None)


def add_beam_request(engine, prompt_ids: list[int], params: BeamSearchParams,
                     pattern: str | None = None) -> int:
    """Queue a beam-search request on the engine; errors finish it like any request's."""
    sp = SamplingParams(max_tokens=params.max_tokens, ignore_eos=True)
    rid = engine.add_request(prompt_ids, sp, pattern)
    req = engine.requests[rid]
    seq = req.seqs[0]
    if seq.is_finished:                          # bad prompt: the error output is pending
        return rid
    error = None
    eos = () if params.ignore_eos else tuple(engine.model_config.eos_token_ids)
    candidates = max(2, 1 + len(set(eos + params.stop_token_ids))) * params.beam_width
    if seq.pattern.evicts:
        error = f"beam search with the sliding attention pattern {seq.pattern} is not supported"
    elif candidates > engine.model_config.vocab_size:
        error = (f"beam width {params.beam_width} needs {candidates} candidates per step, more "
                 f"than the vocabulary of {engine.model_config.vocab_size}")
    if error is not None:
        engine.finish_sequence(seq, FinishReason.ERROR, error=error, error_kind=ErrorKind.UNSUPPORTED)
    else:
        engine.beam_groups[rid] = BeamGroup(engine, req, params)
    return rid


def release_parked(engine) -> bool:
    """Called when a step could schedule nothing although requests wait: parked beams hold blocks
    that the waiting sequences (often their own preempted siblings) need, and nothing running
    will ever free them. Preempt the parked beams (blocks freed, full ones stay in the prefix
    cache; they recompute and offer their logits again). If a group was already released at the
    same beam length, its beams cannot all be in the cache at once: finish it with an error.
    Returns True when it freed something (the caller schedules again)."""
    released = False
    for rid, group in list(engine.beam_groups.items()):
        if not group.parked:
            continue
        length = len(group.parked[0].output_ids)
        if group.released_at == length:
            live = [s for s in group.beams + group.parked if not s.is_finished]
            blocks = engine.bm.blocks_for(group.parked[0].num_tokens + 1)
            for s in live[1:]:
                group._drop(s)
            group.parked, group.beams, group.done = [], [], True
            engine.beam_groups.pop(rid, None)
            if live:
                engine.finish_sequence(live[0], FinishReason.ERROR, error_kind=ErrorKind.KV_CACHE_TOO_SMALL, error=(
                    f"beam search of width {group.params.beam_width} needs about "
                    f"{len(live) * blocks} KV blocks to keep its beams in step; the cache has "
                    f"{engine.bm.num_blocks} blocks"))
            released = True
            continue
        group.released_at = length
        for s in reversed(group.parked):
            group.pending.pop(s.seq_id, None)
            engine.scheduler.requeue(s)
        group.parked = []
        released = True
    return released


def take_beam_rows(engine, rows: list[tuple[Sequence, tuple[np.ndarray, np.ndarray]]]) -> None:
    """Give beam sequences' (ids, logprobs) rows to their groups and advance the groups that
    got rows."""
    touched = {}
    for seq, row in rows:
        group = engine.beam_groups.get(seq.request_id)
        if group is not None and not seq.is_finished:
            group.offer(seq, row)
            touched[seq.request_id] = group
    for group in touched.values():
        group.advance()
    for rid in [r for r in engine.beam_groups if r not in engine.requests]:
        del engine.beam_groups[rid]              # aborted or finished outside the group
