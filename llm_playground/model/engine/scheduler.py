"""Which sequences run in the next step, how many tokens each, and who is preempted.

Policy (one step):
1. Running sequences that decode (one token each) are scheduled first, oldest first.
2. Running sequences in the middle of a chunked prefill continue, oldest first.
3. Waiting sequences (new, or preempted earlier: those go to the front) are admitted FIFO while
   the per-step token budget (`max_num_batched_tokens`), `max_num_seqs` and free blocks allow.
   Admission first looks up the prefix cache, so a resumed or related prompt computes only its
   uncached tail. With chunked prefill a prompt takes whatever budget is left; without it a
   prompt runs whole (the first prompt of a step may exceed the budget, beside the decodes).
Overlap scheduling: a sequence whose last token is still on its way from the device counts it
(`num_tokens_ahead`) and decodes it next; one whose logits row is in flight and whose group must
see the result before it goes on (beams, the n > 1 fork, a repetition penalty, a known last
token) has nothing to compute (`num_computed == num_tokens_ahead`): it is skipped this step and
never chosen for preemption (its result still has to land in its blocks and table).
When a running sequence needs a block and none is left, the newest running sequence not yet
scheduled this step is preempted by recompute: its blocks are freed (full ones stay in the prefix
cache) and it goes back to the front of the waiting queue; possibly that is the sequence itself.
Admissions never preempt running sequences. A sequence that alone needs more blocks than the
whole cache is finished (`outgrown`).

The scheduler only does bookkeeping (through the block manager); the engine runs the model.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from llm_playground.model.engine.block_manager import BlockManager
from llm_playground.model.engine.sequence import Sequence, SeqStatus


class ScheduledSeq:
    """One sequence's share of a step: positions [start, start + num_tokens).
    A plain slotted class (not a dataclass): the scheduler makes one per sequence per step.
    `total`: the sequence's length ahead (Sequence.num_tokens_ahead) when the caller has it."""
    __slots__ = ("seq", "start", "num_tokens", "end", "is_decode", "needs_logits", "spec",
                 "catchup")

    def __init__(self, seq: Sequence, start: int, num_tokens: int,
                 total: int | None = None) -> None:
        self.seq = seq
        self.start = start              # first position computed this step (earlier ones are cached)
        self.num_tokens = num_tokens    # new tokens this step (q_len)
        self.end = start + num_tokens
        if total is None:
            total = len(seq.prompt_ids) + len(seq.output_ids) + seq.num_pending
        # The K/V of the last sampled token only (vs a prompt / recompute chunk). A one-token
        # prompt, or a prompt whose prefix came from the cache but for its last token, is still
        # prefill: the first token is not out yet (else TTFT and decode tok/s are wrong). A token
        # still on its way from the device (overlap scheduling) counts as sampled.
        self.is_decode = total - start == 1 and bool(seq.output_ids or seq.num_pending)
        # The last token of the sequence is computed: a new token gets sampled (fixed at
        # scheduling time, before the step appends anything).
        self.needs_logits = self.end == total
        # Speculative verification (model/engine/spec_planner.py widens a decode to 1 + k
        # tokens): (k, proposals) with proposals () when the draft model proposes; else None.
        self.spec: tuple[int, tuple[int, ...]] | None = None
        # The draft model's catch-up alone (no verification this step): (first position,
        # count) of the ids its own cache lacks, sized by the step's token budget; else None.
        self.catchup: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return (f"ScheduledSeq(seq={self.seq.seq_id}, start={self.start}, "
                f"num_tokens={self.num_tokens})")


@dataclass
class SchedulerOutput:
    """One step's plan: what runs (decodes first), the copies to make before it, and who left."""
    scheduled: list[ScheduledSeq] = field(default_factory=list)   # q_len == 1 first
    copies: list[tuple[int, int]] = field(default_factory=list)   # copy-on-write (src, dst)
    preempted: list[Sequence] = field(default_factory=list)
    outgrown: list[Sequence] = field(default_factory=list)        # need more than the whole cache

    # Both counts are read when the step ends (speculation may have widened decodes by then):
    # plain loops, not generator expressions, since they run over every scheduled sequence.
    @property
    def num_prefill_tokens(self) -> int:
        """Tokens of prompt (or recompute) chunks in the step."""
        n = 0
        for s in self.scheduled:
            if not s.is_decode:
                n += s.num_tokens
        return n

    @property
    def num_decode_tokens(self) -> int:
        """Tokens of decodes (one per decoding sequence) in the step."""
        n = 0
        for s in self.scheduled:
            if s.is_decode:
                n += s.num_tokens
        return n


def _evicts(seq: Sequence) -> bool:
    pattern = seq.pattern
    return pattern is not None and pattern.evicts


class Scheduler:
    """The waiting queue and the running list; `schedule` plans one step (see the module
    docstring). Blocks are read and changed only through the block manager's methods."""

    def __init__(self, block_manager: BlockManager, max_num_batched_tokens: int, max_num_seqs: int,
                 enable_chunked_prefill: bool = True, max_model_len: int | None = None) -> None:
        self.bm = block_manager
        self.max_model_len = max_model_len
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_num_seqs = max_num_seqs
        self.enable_chunked_prefill = enable_chunked_prefill
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []       # oldest first
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence at the back of the waiting queue."""
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def add_running(self, seq: Sequence) -> None:
        """A forked child joins right after its parent (it already holds the parent's blocks)."""
        seq.status = SeqStatus.RUNNING
        self.running.append(seq)
        self.running.sort(key=lambda s: (s.arrival_time, s.seq_id))

    def remove(self, seq: Sequence) -> None:
        """Drop a finished or aborted sequence and release its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
        if self.bm.has(seq.seq_id):
            self.bm.free(seq.seq_id)

    def has_work(self) -> bool:
        """Whether any sequence waits or runs."""
        return bool(self.waiting or self.running)

    # ---- one step ----------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        """Plan the next step: running sequences first, then admissions (module docstring)."""
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        gone: set[int] = set()                   # preempted earlier in this step
        writes_in_place = self.bm.writes_in_place
        scheduled = out.scheduled

        # (sequence, its length ahead): decodes first, then prefill chunks. One pass, the length
        # computed once (Sequence.num_tokens_ahead inlined: this loop runs per sequence per step).
        decodes, prefills = [], []
        for s in self.running:
            total = len(s.prompt_ids) + len(s.output_ids) + s.num_pending
            (prefills if total - s.num_computed > 1 else decodes).append((s, total))
        for seq, total in decodes + prefills:
            if budget <= 0:
                break
            if gone and seq.seq_id in gone:
                continue
            start = seq.num_computed
            if total == start:
                continue                         # its row is in flight; nothing to compute yet
            pattern = seq.pattern
            if total - start == 1 and (pattern is None or not pattern.evicts):
                # Fast path (most decodes): the token goes into a block the sequence already
                # owns alone, so nothing is allocated, copied or preempted.
                if writes_in_place(seq.seq_id, start):
                    scheduled.append(ScheduledSeq(seq, start, 1, total))
                    budget -= 1
                    continue
            n = self._cap_sliding(seq, start, min(total - start, budget))
            if self._blocks_beyond_cache(seq, start + n):
                out.outgrown.append(seq)
                self.remove(seq)
                continue
            if not self._make_room(seq, start, start + n, gone, out):
                continue                         # the sequence itself was preempted
            out.copies += self.bm.prepare_write(seq.seq_id, start, start + n)
            scheduled.append(ScheduledSeq(seq, start, n, total))
            budget -= n

        # No admissions in a step that had to preempt: memory is short, let the running finish.
        while (self.waiting and budget > 0 and len(self.running) < self.max_num_seqs
               and not out.preempted):
            seq = self.waiting[0]
            tokens = seq.all_ids
            cacheable = seq.cacheable
            salt = str(seq.pattern) if seq.pattern is not None else "dense"
            hit = len(self.bm.lookup_prefix(tokens, salt)) if cacheable else 0
            cached = hit * self.bm.block_size
            remaining = len(tokens) - cached
            n = self._cap_sliding(seq, cached, min(remaining, budget))
            if not self.enable_chunked_prefill and n < remaining and not _evicts(seq):
                if any(not s.is_decode for s in out.scheduled):
                    break
                # Without chunking, the first prompt of a step runs whole beside the decodes
                # even above the budget (the classic prefill stall); otherwise running decodes
                # would starve it forever.
                n = remaining
            need, avail = self.bm.blocks_needed_to_admit(tokens, cached + n, cacheable, salt)
            if need > avail:
                if not self.enable_chunked_prefill and not _evicts(seq):
                    break
                n = avail * self.bm.block_size   # the chunk that fits now
                if n <= 0:
                    break
            self.waiting.popleft()
            got = self.bm.admit(seq.seq_id, tokens, cacheable, salt)
            assert got == cached, "prefix cache changed between lookup and admission"
            seq.num_computed = cached
            seq.num_cached_tokens = cached
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            out.copies += self.bm.prepare_write(seq.seq_id, cached, cached + n)
            scheduled.append(ScheduledSeq(seq, cached, n))
            budget -= n

        # Stable: decodes (q_len 1) first, the rest in the order scheduled.
        ones = [s for s in scheduled if s.num_tokens == 1]
        if len(ones) != len(scheduled):
            out.scheduled = ones + [s for s in scheduled if s.num_tokens != 1]
        return out

    def _cap_sliding(self, seq: Sequence, start: int, n: int) -> int:
        """A sliding-pattern sequence (blocks freed between steps, RoPE positions compacted) is
        always chunked, so that its compacted positions stay inside the RoPE table and its live
        blocks inside the pool: blocks fall out of reach only between steps, so a prompt longer
        than the whole cache is prefilled in chunks that each fit beside the kept blocks."""
        if not _evicts(seq):
            return n
        holes = self.bm.num_holes(seq.seq_id) * self.bm.block_size
        n = min(n, self.bm.num_blocks * self.bm.block_size - (start - holes))
        if self.max_model_len is not None:
            n = min(n, self.max_model_len - (start - holes))
        return max(1, n)

    def _blocks_beyond_cache(self, seq: Sequence, end: int) -> bool:
        holes = self.bm.num_holes(seq.seq_id)
        return self.bm.blocks_for(end) - holes > self.bm.num_blocks

    def _make_room(self, seq: Sequence, start: int, end: int, gone: set[int],
                   out: SchedulerOutput) -> bool:
        """Preempt newest unscheduled running sequences until seq can write [start, end).
        Returns False when seq itself had to be preempted."""
        while self.bm.blocks_needed(seq.seq_id, start, end) > self.bm.num_available:
            done = {s.seq.seq_id for s in out.scheduled}              # scheduled this step
            victims = [s for s in self.running if s.seq_id not in done
                       and s.num_computed < s.num_tokens_ahead]        # not awaiting a result
            victim = max(victims, key=lambda s: (s.arrival_time, s.seq_id))
            self.preempt(victim)
            out.preempted.append(victim)
            gone.add(victim.seq_id)
            if victim is seq:
                return False
        return True

    def preempt(self, seq: Sequence) -> None:
        """Recompute preemption: free the blocks (full ones stay cached) and requeue at the front."""
        self.running.remove(seq)
        self.requeue(seq)

    def requeue(self, seq: Sequence) -> None:
        """Preempt a sequence that is not in `running` (a parked beam): blocks freed, back to the
        front of the queue to recompute."""
        self.bm.free(seq.seq_id)
        seq.num_computed = 0
        seq.draft_computed = 0          # the draft model's K/V went with the blocks
        seq.status = SeqStatus.PREEMPTED
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
