"""Plain-data snapshots the engine publishes after each step (for the UI and the benchmarks).

Dataclasses of ints, floats, strings and lists only: no tensors, cheap to copy, safe to hand to
another thread. The engine fills them (model/engine/engine.py); the UI only reads them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from llm_playground.model.engine.outcomes import ErrorKind, FinishReason

# Block states as the KV-cache inspector colours them.
FREE = "free"        # on the free list, holds nothing reusable
CACHED = "cached"    # no owner (ref count 0) but holds a full block in the prefix cache; evictable (LRU)
USED = "used"        # owned by exactly one sequence
SHARED = "shared"    # owned by several sequences (ref count > 1)


@dataclass(slots=True)
class BlockInfo:
    """One physical KV block in a CacheReport: its state, reference count, owners and fill."""
    block_id: int
    state: str                       # FREE / CACHED / USED / SHARED
    ref_count: int
    owners: list[int] = field(default_factory=list)  # sequence ids holding it
    num_tokens: int = 0              # filled slots (== block_size for a full block)


@dataclass(slots=True)
class SequenceReport:
    """One sequence as a step left it. A sequence that finished during the step (or was aborted
    or refused since the last step) is reported once more, in the report that carries its final
    output, with status "finished" and its block table, cached prompt tokens and KV tokens as they
    were just before its blocks were freed (those blocks may already be free or cached)."""
    seq_id: int
    request_id: int | str
    status: str                      # waiting / running / preempted / finished
    prompt_len: int
    output_len: int
    num_cached_tokens: int           # prompt tokens served by the prefix cache
    block_table: list[int]           # logical -> physical; -1 = hole (freed by a sliding pattern)
    kv_tokens: int                   # tokens held in the cache for this sequence


@dataclass
class CacheReport:
    """A snapshot of the KV block pool: counts per state, every block, bytes in use and wasted, and
    the cumulative prefix-cache and preemption counters."""
    num_blocks: int
    block_size: int
    bytes_per_block: int             # 2 * layers * kv_heads * head_dim * dtype bytes * block_size
    num_free: int
    num_cached: int
    num_used: int
    num_shared: int
    blocks: list[BlockInfo]          # one per physical block, index == block_id
    kv_bytes_in_use: int             # bytes of blocks owned by some sequence
    kv_bytes_wasted: int             # allocated slots not holding a token, in bytes
    reserved_bytes_equivalent: int   # a contiguous cache reserved at max length for the same sequences
    prefix_hits: int = 0             # tokens served from the prefix cache, cumulative
    prefix_queries: int = 0          # prompt tokens looked up, cumulative
    preemptions: int = 0             # cumulative


@dataclass(slots=True)
class RequestOutput:
    """What one sample of a request produced since the last report (ids, text, how it ended, and
    when asked, what the sampler considered for each token)."""
    request_id: int | str             # the caller's id (add_request(request_id=...)) or the engine's
    new_token_ids: list[int]
    text_delta: str                  # complete UTF-8 text released this step (streaming decoder)
    finished: bool
    finish_reason: FinishReason | None = None   # set when finished (model/engine/outcomes.py)
    error: str | None = None                    # one line, with finish_reason ERROR
    error_kind: ErrorKind | None = None
    sample_index: int = 0            # which of the n parallel samples
    # params.logprobs set: one TokenChoice (model/engine/token_choice.py) per new token id, in
    # order (what the sampler considered); None when not asked
    choices: list | None = None
    # Speculative decoding: per new token, True for a draft's proposal the target accepted,
    # False for the target's own token; None when this sequence never verified a proposal.
    speculated: list | None = None
    # ... and the proposals this sample's verifications landed since its last output, and how
    # many of them the target accepted (acceptance = accepted / proposed, exact per sample)
    spec_proposed: int = 0
    spec_accepted: int = 0
    # Once, in the first output after the engine decided it: why this sample decodes without
    # speculation although the engine speculates (one line: beam search, a sliding pattern,
    # a draft model with a repetition penalty); None otherwise.
    speculation_refused: str | None = None


@dataclass
class RankShare:
    """One tensor-parallel rank's share of the model and of every KV block (parallel/)."""
    rank: int
    q_heads: int
    kv_heads: int
    replicated_kv: bool              # its KV heads are also held by other ranks (GQA, vLLM)
    bytes_per_block: int             # this rank's K and V of one block, all layers
    kv_bytes: int                    # bytes_per_block x blocks: its pool


@dataclass
class ReplicaLoad:
    """One data-parallel replica's pool and load as the router last heard (parallel/)."""
    replica: int
    alive: bool
    num_running: int
    num_blocks: int
    num_used: int
    prefix_hits: int
    prefix_queries: int
    routed: int                      # requests the router sent it, cumulative


@dataclass
class ParallelReport:
    """Parallel serving's part of a step: the ranks' shares and the time rank 0 spent in the
    step's collectives (all-reduces of the row-parallel projections, the logits' all_gather),
    or the data-parallel replicas' pools."""
    mode: str                                    # "tensor" or "data"
    world: int
    ranks: list[RankShare] = field(default_factory=list)
    comm_s: float = 0.0                          # collectives run since the last report's
    #   (taken when a step is collected: with overlap, the step collected and the one submitted)
    comm_calls: int = 0
    broadcast_s: float = 0.0                     # the plan's broadcast to the followers
    replicas: list[ReplicaLoad] = field(default_factory=list)


@dataclass
class StepReport:
    """What one engine step did: its outputs, token counts, timings and throughputs, the live
    sequences, the cache after the step, and the queue lengths."""
    step: int
    outputs: list[RequestOutput]
    num_prefill_tokens: int
    num_decode_tokens: int
    step_time_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    ttft_s: dict[int, float]              # request id -> time to first token, for requests whose first token came this step
    inter_token_latency_s: float          # this step's wall time as seen by each decoding sequence
    sequences: list[SequenceReport]       # live sequences, then those that finished this step
    cache: CacheReport                    # the pool after the step (finished sequences' blocks freed)
    num_running: int = 0
    num_waiting: int = 0
    parallel: ParallelReport | None = None        # tensor / data parallel serving, else None
    # Speculative decoding: verifications whose result landed in this call, the tokens they
    # proposed and how many of those the target accepted (each row also emits one token of the
    # target's own: `spec_tokens_per_row` = 1 + accepted / rows).
    spec_rows: int = 0
    spec_proposed: int = 0
    spec_accepted: int = 0

    @property
    def spec_acceptance(self) -> float | None:
        """Accepted / proposed of this call's verifications (None when none landed)."""
        return self.spec_accepted / self.spec_proposed if self.spec_proposed else None

    @property
    def spec_tokens_per_row(self) -> float | None:
        """Tokens emitted per verification (1 + accepted / rows; None when none landed)."""
        return 1 + self.spec_accepted / self.spec_rows if self.spec_rows else None
