"""Speculative decoding on the engine side: which decodes verify proposals, and what lands.

After the scheduler has planned a step, `SpecPlanner.extend` widens some of its decodes into
verify rows: the decode's one token (the last accepted id, whose K/V is not written yet) plus k
proposals, 1 + k positions written in one target step (model/engine/batch_builder.py builds
the row, the runner verifies it: model/engine/spec_verify.py). Proposals come from prompt lookup
on the host (model/engine/ngram_proposer.py) or from the runner's draft model (placeholders the
runner fills, model/engine/draft_runner.py). The extra positions' blocks are claimed here
(`BlockManager.prepare_write`, from free blocks only: speculation never preempts anyone) and,
once the row's result lands, `landed` gives back the blocks past the accepted tokens
(`BlockManager.roll_back`); their prefix-cache hashes are never committed, because commits only
hash ids known on the host and the rejected ids never are.

Who speculates (the rest decode as usual, in the same batch; `why_not` names the reason, and a
refused sample's next output says it once, `RequestOutput.speculation_refused`; a beam
search's on its best hypothesis):
plain sampling groups (not beam search, whose group picks tokens itself; an n > 1 request once
its prompt row has forked, each sample on its own), dense-like attention patterns (a sliding
pattern frees and re-rotates blocks between steps: refused), and with a draft model no
repetition penalty (the draft's proposals never reach the host before the target's filters
need them). `logprobs` requests speculate too: each emitted token gets the TokenChoice plain
decoding gives it (model/engine/spec_verify.py `verify_choices`). k is capped by max_tokens,
the context end and the step's token budget.

A draft model with its own cache must first compute its K/V for what the target has (a whole
prompt the first time, all of it again after a preemption): the draft's catch-up of a step,
all rows together, is at most the step's token budget. A row whose draft lags more than what
is left only catches up this step (`ScheduledSeq.catchup`, a draft-only forward of at most
that many ids) and verifies once level; so a long prompt's draft prefill is spread over steps
like the target's chunked prefill, and no draft forward is larger than the budget.

Backoff (so that prompts that do not copy stay as fast as without speculation): each sequence
keeps its own k, grown by 2 after a fully accepted row and shrunk by 1 otherwise (transformers'
assisted generation heuristic); a row with nothing accepted also pauses the sequence's
speculation for 1, 2, 4, ... steps (up to MAX_PAUSE), reset by the next acceptance. Prompt
lookup proposes only where its n-gram recurs, so text that does not copy rarely verifies at all.

Overlap: a verify row never runs ahead (its next plan depends on how many tokens it accepted),
and neither does a decode whose sequence would verify next step (`wants_next`: proposals need
its id on the host); a sequence paused by the backoff runs ahead as usual (docs/RUNTIME.md).
This module touches no tensor.
"""
from __future__ import annotations

from llm_playground.model.engine.ngram_proposer import NgramIndex, propose
from llm_playground.model.engine.scheduler import SchedulerOutput
from llm_playground.model.engine.sequence import Sequence
from llm_playground.model.engine.sequence_group import SamplingGroup
from llm_playground.model.engine.spec_config import SpecConfig

MAX_PAUSE = 16   # steps a sequence waits at most after a verify with nothing accepted
FORK_PENDING = "its prompt row forks the n samples"    # for now: each sample speculates later
BEAM_SEARCH = ("beam search picks each step's tokens from all beams' candidates, not one draw "
               "per row that a proposal could be checked against")


class _SeqSpec:
    """One sequence's speculation state: its k, its pause, its n-gram buffer."""
    __slots__ = ("k", "pause", "wait", "index")

    def __init__(self, k: int) -> None:
        self.k = k
        self.pause = 1          # next pause length after a fully rejected row
        self.wait = 0           # steps left to wait
        self.index = NgramIndex()


class SpecStats:
    """Cumulative counts, for reports and benchmarks."""
    __slots__ = ("rows", "proposed", "accepted", "emitted")

    def __init__(self) -> None:
        self.rows = self.proposed = self.accepted = self.emitted = 0


class SpecPlanner:
    """Widens decodes into verify rows and takes their results (see the module docstring)."""

    def __init__(self, config: SpecConfig, bm, max_model_len: int, token_budget: int) -> None:
        self.config = config
        self.bm = bm
        self.max_model_len = max_model_len
        self.token_budget = token_budget
        # draft:layers=L: the draft's K/V are the target's first layers, always up to date
        self.shares_target_cache = config.draft_layers is not None
        self.catches_up = config.uses_draft_model and not self.shares_target_cache
        self._state: dict[int, _SeqSpec] = {}
        self._refused: set[int] = set()         # sequences told why they do not speculate
        self.stats = SpecStats()

    @classmethod
    def of(cls, config: SpecConfig, bm, max_model_len: int, token_budget: int
           ) -> "SpecPlanner | None":
        """The planner of `config`, or None when speculation is off."""
        return cls(config, bm, max_model_len, token_budget) if config.enabled else None

    @staticmethod
    def extend_step(planner: "SpecPlanner | None", sched: SchedulerOutput, groups: dict
                    ) -> tuple[int, int, int]:
        """`planner.extend` the step (nothing without a planner); returns the counts before
        the step (for `report_fields`)."""
        if planner is not None:
            planner.extend(sched, groups)
        return SpecPlanner.counts_of(planner)

    @staticmethod
    def counts_of(planner: "SpecPlanner | None") -> tuple[int, int, int]:
        """Cumulative (verify rows, proposed, accepted) of `planner` ((0, 0, 0) for None)."""
        if planner is None:
            return (0, 0, 0)
        st = planner.stats
        return (st.rows, st.proposed, st.accepted)

    @staticmethod
    def report_fields(planner: "SpecPlanner | None", before: tuple[int, int, int]) -> dict:
        """StepReport's spec_rows / spec_proposed / spec_accepted since `before`."""
        now = SpecPlanner.counts_of(planner)
        return {f"spec_{name}": a - b
                for name, a, b in zip(("rows", "proposed", "accepted"), now, before)}

    def why_not(self, seq: Sequence, group) -> str | None:
        """Why `seq` does not speculate now (None: it may)."""
        p = seq.params
        if not isinstance(group, SamplingGroup):
            return BEAM_SEARCH
        if p.n > 1 and not group.forked:
            return FORK_PENDING
        if seq.pattern.evicts:
            return (f"the sliding attention pattern {seq.pattern.name} frees and re-rotates "
                    f"blocks between steps, which the rollback of rejected proposals does not handle")
        if self.config.uses_draft_model and p.repetition_penalty != 1.0:
            return ("a repetition penalty with a draft model: the target's penalty needs the "
                    "draft's proposals on the host, and they stay on the device")
        return None

    def extend(self, sched: SchedulerOutput, groups: dict) -> None:
        """Widen the step's eligible decodes into verify rows, in place; then order the step's
        rows as the batch builder wants them: decodes, verify rows (longest first), the rest."""
        budget = self.token_budget - sum(it.num_tokens for it in sched.scheduled)
        bm, cfg = self.bm, self.config
        # a draft with its own cache: its catch-up tokens of the step, all rows together
        draft_left = self.token_budget if self.catches_up else 0
        widened = False
        for it in sched.scheduled:
            seq = it.seq
            if not (it.is_decode and it.needs_logits and it.num_tokens == 1):
                continue
            st = self._state.get(seq.seq_id)
            if st is None:
                if seq.seq_id in self._refused:
                    continue
                group = groups.get(seq.request_id)
                why = self.why_not(seq, group)
                if why is not None:
                    if why != FORK_PENDING:        # for good: the request's output says why
                        self._refused.add(seq.seq_id)
                        self._tell(seq, group, why)
                    continue
                st = self._state[seq.seq_id] = _SeqSpec(cfg.k)
            if st.wait:
                st.wait -= 1
                continue
            if seq.num_pending:          # its last id is still on the device (overlap)
                continue
            n = seq.num_tokens
            k = min(st.k, seq.params.max_tokens - len(seq.output_ids) - 1,
                    self.max_model_len - n - 1, budget)
            if k <= 0:
                continue
            lag = 0                      # the draft's catch-up ids up to the row's input
            if self.catches_up:
                behind = min(seq.draft_computed, it.start)
                lag = it.start + 1 - behind
                if lag > draft_left:     # too far behind: only catch up (bounded), verify later
                    c = min(lag - 1, draft_left)
                    if c > 0:
                        it.catchup, seq.draft_computed = (behind, c), behind + c
                        draft_left -= c
                    continue
            proposals: tuple[int, ...] = ()
            if cfg.method == "ngram":
                ids = st.index.sync(seq.prompt_ids, seq.output_ids)
                proposals = tuple(propose(ids, k, cfg.ngram_max, cfg.ngram_min))
                if not proposals:
                    continue
                k = len(proposals)
            start = it.start
            # Blocks for the proposals from free ones only (never a preemption for a guess).
            while k > 0 and bm.blocks_needed(seq.seq_id, start, start + 1 + k) > bm.num_available:
                k -= 1
                proposals = proposals[:k]
            if k <= 0:
                continue
            sched.copies += bm.prepare_write(seq.seq_id, start, start + 1 + k)
            if self.shares_target_cache:
                seq.draft_computed = start
            it.num_tokens, it.end, it.spec = 1 + k, start + 1 + k, (k, proposals)
            seq.spec_k, seq.spec_start = k, start
            budget -= k
            draft_left -= lag
            widened = True
        if widened:
            sched.scheduled.sort(key=lambda s: (0, 0) if s.spec is None and s.num_tokens == 1
                                 else (1, -s.num_tokens) if s.spec is not None else (2, 0))

    @staticmethod
    def _tell(seq: Sequence, group, why: str) -> None:
        """The sample's next output (a beam search's final one) says why it does not speculate."""
        note = f"speculation off for this request: {why}"
        if isinstance(group, SamplingGroup):
            seq.new_spec_refusal = note
        elif group is not None and group.spec_refusal is None:
            group.spec_refusal = note

    def wants_next(self, seq: Sequence, group) -> bool:
        """Overlap: whether `seq` should wait for its drawn id (instead of running ahead)
        because the next step would verify proposals for it (it may speculate and is not
        paused); a paused sequence runs ahead."""
        st = self._state.get(seq.seq_id)
        if st is not None:
            return st.wait == 0
        return self.why_not(seq, group) is None

    def landed(self, seq: Sequence, accepted: int) -> None:
        """The verification of `seq` landed with `accepted` proposals taken (its tokens are
        appended): its K/V now holds spec_start + 1 + accepted positions; the blocks past them
        go back; the draft's length and the backoff move on."""
        k, start = seq.spec_k, seq.spec_start
        seq.spec_k = 0
        seq.new_spec_proposed += k
        seq.new_spec_accepted += accepted
        stats = self.stats
        stats.rows += 1
        stats.proposed += k
        stats.accepted += accepted
        stats.emitted += accepted + 1
        valid = start + 1 + accepted
        st = self._state.get(seq.seq_id)
        if st is not None:
            if accepted == k:
                st.k = min(self.config.k, st.k + 2)
            else:
                st.k = max(1, st.k - 1)
            if accepted == 0:
                st.wait, st.pause = st.pause, min(MAX_PAUSE, 2 * st.pause)
            else:
                st.pause = 1
        if seq.is_finished:
            return
        seq.num_computed = valid
        # the draft wrote positions .. start + k - 1; those that hold accepted ids stay valid
        seq.draft_computed = valid if self.shares_target_cache else start + 1 + min(accepted, k - 1)
        if self.bm.has(seq.seq_id):
            self.bm.roll_back(seq.seq_id, valid)

    def forget(self, seq: Sequence) -> None:
        """The sequence ended: drop its state."""
        self._state.pop(seq.seq_id, None)
        self._refused.discard(seq.seq_id)


def speculation_setup(spec, loaded, num_blocks: int, block_size: int, draft_model=None):
    """(SpecConfig, DraftProposer or None) for `spec` (a string or a SpecConfig) over the
    target `loaded`: the draft is built (draft:layers=L:K) or loaded (draft:PATH:K; or taken
    from `draft_model`, a LoadedModel the caller already has) beside the target's cache.
    `draft_model` may also be a DraftProposer already built (kept as it is)."""
    from llm_playground.model.engine.spec_config import parse_speculate
    spec = parse_speculate(spec)
    if not spec.uses_draft_model:
        return spec, None
    from llm_playground.model.engine.draft_runner import (DraftProposer, draft_from_loaded,
                                                          load_draft)
    if isinstance(draft_model, DraftProposer):
        return spec, draft_model
    if draft_model is not None and spec.draft_layers is None:
        return spec, draft_from_loaded(draft_model, loaded, num_blocks, block_size)
    return spec, load_draft(spec, loaded, num_blocks, block_size)


def spec_switch(engine, spec, draft=None):
    """(SpecConfig, DraftProposer or None) for `engine` switching to `spec`: the draft is kept
    when it stays the same, else made anew (every live sequence's draft K/V starts over)."""
    from llm_playground.model.engine.spec_config import parse_speculate
    spec = parse_speculate(spec)
    old, was = getattr(engine.runner, "draft", None), getattr(engine, "speculate", None)
    if draft is None and old is not None and spec.uses_draft_model and \
            (spec.draft_path, spec.draft_layers) == (was.draft_path, was.draft_layers):
        return spec, old
    spec, draft = speculation_setup(spec, engine.loaded, engine.bm.num_blocks,
                                    engine.bm.block_size, draft)
    if draft is not None:
        draft.attach(engine.runner.kv)
        for req in engine.requests.values():
            for seq in req.seqs:
                seq.draft_computed = 0
    return spec, draft


class SpecControl:
    """Engine mixin: switch speculative decoding between steps (the Chat settings do)."""

    def set_speculate(self, spec, draft=None) -> None:
        """Speculative decoding from the next plan on (`off`, `ngram:K`, `draft:PATH:K`,
        `draft:layers=L:K`; model/engine/spec_config.py), called between steps. A verify row
        still in flight (overlap) lands as it was planned: its rollback needs no planner state.
        `draft`: a LoadedModel for draft:PATH:K that the caller has already (else PATH loads)."""
        self.speculate, self.runner.draft = spec_switch(self, spec, draft)
        self.spec_planner = SpecPlanner.of(self.speculate, self.bm, self.max_model_len,
                                           self.config.max_num_batched_tokens)
