"""One generated stream (a `Sequence`) and the request that owns one or more of them.

A `Sequence` holds its token ids (prompt + output), how many of them already have K/V in the
paged cache (`num_computed`), its block table (logical -> physical block, -1 = hole freed by a
sliding pattern) and the hash chain of its full blocks (for the prefix cache). It also carries
its text state (streaming decoder, stop-string
hold-back). It does not allocate blocks (model/engine/block_manager.py) and does not decide when it runs
(model/engine/scheduler.py).

A `Request` groups the n parallel samples of one `add_request` call: sample 0 prefills the
prompt, then is forked into n - 1 children that share its blocks (copy-on-write); what its
sequences do with their logits is decided by its `SequenceGroup` (model/engine/sequence_group.py).
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from llm_playground.model.engine.outcomes import ErrorKind, FinishReason
from llm_playground.model.engine.sampling_params import SamplingParams


class SeqStatus(str, enum.Enum):
    """Where a sequence is in its life: waiting for admission, running, preempted, finished."""

    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"   # blocks freed; waits to recompute prompt + outputs so far
    FINISHED = "finished"


# Read in the step loop once per sequence or more: a module constant, not `SeqStatus.FINISHED`
# (an enum class attribute goes through a descriptor on every read).
_FINISHED = SeqStatus.FINISHED

class TextState:
    """Incremental detokenization with stop strings: release only text that cannot be the start
    of a stop string, and cut the output before the first stop string found."""

    def __init__(self, decoder, stops: tuple[str, ...]) -> None:
        self.decoder = decoder        # bpe.IncrementalDecoder or None (no tokenizer: no text)
        self.stops = stops
        self.text = ""                # all text decoded so far (may run past a stop string)
        self.emitted = 0              # characters of self.text already released
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Feed one generated id; return newly releasable text (may be '')."""
        if self.decoder is None or self.stopped:
            return ""
        self.text += self.decoder.push(token_id)
        return self._release(final=False)

    def finish(self) -> str:
        """The stream ended for another reason (EOS, length, abort): release the held-back rest."""
        if self.decoder is None or self.stopped:
            return ""
        self.text += self.decoder.flush()
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stops:
            start = max(0, self.emitted - max(len(s) for s in self.stops) + 1)
            hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
            if hits:
                cut = min(hits)
                out = self.text[self.emitted:cut]
                self.text = self.text[:cut]
                self.emitted = cut
                self.stopped = True
                return out
        end = len(self.text)
        if not final and self.stops:
            end -= self._held_back()
        end = max(end, self.emitted)
        out = self.text[self.emitted:end]
        self.emitted = end
        return out

    def _held_back(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of a stop string."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:k]):
                    best = k
                    break
        return best


@dataclass(eq=False)   # identity: two sequences are never 'equal'
class Sequence:
    """One generated continuation: its prompt and output ids, how many have K/V in the cache,
    its status, timings, outcome and the output not yet reported."""

    seq_id: int
    request_id: int | str            # the caller's id, or the engine's serial number
    prompt_ids: list[int]
    params: SamplingParams
    sample_index: int = 0
    output_ids: list[int] = field(default_factory=list)
    status: SeqStatus = SeqStatus.WAITING
    num_computed: int = 0            # tokens whose K/V is in the cache (positions 0..num_computed-1)
    num_cached_tokens: int = 0       # prompt tokens served by the prefix cache at the last admission
    # The block table lives in the block manager (BlockManager.table(seq_id)), the one owner.
    # The random stream lives in the model runner, under the key (request serial, sample_index).
    serial: int = 0                  # the request's engine-internal number
    text: TextState | None = None
    arrival_time: float = field(default_factory=time.perf_counter)
    first_token_time: float | None = None
    last_token_time: float | None = None
    finish_reason: FinishReason | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    pattern: object | None = None    # engine.attention_patterns.AttentionPattern (None = dense)
    # False for sliding patterns: their blocks get freed / re-rotated, so they must not be shared.
    cacheable: bool = True
    # Output not yet reported: ids and text since the last RequestOutput, and a finish flag.
    new_tokens: list[int] = field(default_factory=list)
    new_choices: list = field(default_factory=list)   # TokenChoice per new token (params.logprobs set)
    delta: str = ""
    just_finished: bool = False
    # Overlap scheduling: tokens drawn on the device whose ids have not reached the host yet
    # (0, or 1 while the engine plans the next step, briefly 2 inside a step), and which draw of
    # the last submitted step holds the latest of them (a plan names it there).
    num_pending: int = 0
    pending_draw: int = -1
    # Speculative decoding (model/engine/spec_planner.py): the draft model's computed length
    # (its own K/V, separate from num_computed), this step's verification (k proposals from
    # position spec_start; 0 = none in flight), and per new token whether it was an accepted
    # proposal (True) or the target's own token (False); empty when the sequence never verified.
    # Since the last output: the proposals its verifications landed and how many were accepted,
    # and, once, why it decodes without speculation while the engine speculates.
    draft_computed: int = 0
    spec_k: int = 0
    spec_start: int = 0
    new_spec: list = field(default_factory=list)
    new_spec_proposed: int = 0
    new_spec_accepted: int = 0
    new_spec_refusal: str | None = None

    @property
    def all_ids(self) -> list[int]:
        """Prompt then output ids (a new list; use token_slice for a part)."""
        return self.prompt_ids + self.output_ids

    def token_slice(self, start: int, end: int) -> list[int]:
        """all_ids[start:end] without building all_ids (O(end - start), not O(length))."""
        p = len(self.prompt_ids)
        if end <= p:
            return self.prompt_ids[start:end]
        if start >= p:
            return self.output_ids[start - p:end - p]
        return self.prompt_ids[start:] + self.output_ids[:end - p]

    @property
    def num_tokens(self) -> int:
        """Prompt plus output length (ids known on the host)."""
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_tokens_ahead(self) -> int:
        """num_tokens plus the tokens drawn on the device and not yet on the host: the length
        the scheduler plans against (overlap scheduling)."""
        return len(self.prompt_ids) + len(self.output_ids) + self.num_pending

    @property
    def is_finished(self) -> bool:
        """The sequence has an outcome (stop, length, abort or error)."""
        return self.status is _FINISHED

    @property
    def in_prefill(self) -> bool:
        """More than one token still lacks K/V (a prompt, or a recompute after preemption)."""
        return self.num_tokens_ahead - self.num_computed > 1


@dataclass(eq=False)
class Request:
    """What a caller submitted: one prompt, its sampling parameters and the sequences it runs."""

    request_id: int | str            # the caller's id, or the engine's serial number
    serial: int
    prompt_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence] = field(default_factory=list)
    arrival_time: float = field(default_factory=time.perf_counter)

    @property
    def is_finished(self) -> bool:
        """Every sequence of the request has finished."""
        return all(s.is_finished for s in self.seqs)
