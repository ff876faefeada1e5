"""The seam between the engine and the model runner: one step as plain host data, and its result.

The engine (requests, scheduler, blocks, stop rules) turns a scheduled step into a `StepPlan`
and hands it to a `ModelRunner` (model/engine/model_runner.py), which owns every tensor: the
network, the KV storage, the device batch, CUDA graphs, generators and the sampler. The runner
returns a `StepResult`. Neither side reaches into the other: a plan holds numpy arrays, ints and
`SamplingParams` only; a result holds Python ints and numpy arrays only (a `TokenChoice`, when a
request asked what the sampler considered, is numpy arrays and ints too). Nothing here knows
which request a row belongs to, beyond the opaque `draw key` that names a random stream.

Why plain data: it can be pickled to a runner in another process (a server, a tensor-parallel
rank that follows rank 0's plan), queued while the runner still works on the previous step
(overlap scheduling), and it carries any number of query tokens per sequence (a prefill chunk,
a decode, or a speculative verify of K+1 tokens all are rows with q_len >= 1).

Layout of one `BatchPlan` (packed, no padding; the layout network/batch.py documents):
    input_ids                            (T,) int64   new tokens (0 where deferred, below)
    seq_rows                             (B,) int32   each row's line of the block table (below)
    starts                               (B,) int32   first position computed this step
    cu_seqlens_q                         (B+1,) int32 prefix sums of each row's q_len
    rope_offsets                         (B,) int32   RoPE position = position - offset (tokens a
                                                      sliding pattern evicted before it), else 0
    logits_rows                          (N,) int64   packed token rows whose logits are needed
    deferred_tokens, deferred_draws      (P,) int64   input_ids[deferred_tokens[p]] is the id the
                                                      previous step drew as its draw
                                                      deferred_draws[p] (overlap scheduling)
    table_width                          int          columns of the table the batch reads
Rows q_len == 1 come first (`num_decodes`), then speculative verify rows (`num_verify` of them
share one q_len, K + 1), then the rest. Each logits row has one `LogitsRequest`, in order,
except that a verification's request covers its k + 1 rows (`Verify`).
Context lengths are starts + q_len. Token t of row b sits at position p = starts[b] + t; its
slot is table[seq_rows[b], p // block_size] * block_size + p % block_size.

The block table is persistent (vLLM's model runner V2 keeps its batch on the GPU the same way):
the runner holds one row per live sequence on the device, and each `StepPlan` carries only the
rows that changed since the previous plan (`table_rows`, `table_data`: whole rows of the
engine's mirror, model/engine/table_rows.py: a sequence admitted or forked, one block appended,
a block copied on write or freed to a hole). The runner writes them before the step's work and
derives positions, slots, context lengths and each batch's (B, W) tables on the device
(model/engine/device_batch.py). So plans apply in order: each one assumes every earlier one.

Overlap scheduling (docs/RUNTIME.md): the engine plans step N+1 before step N's ids reach the
host. A decode whose input is the token step N sampled names it by position instead: draw d of
step N, counting the draws of all logits rows of all batches in plan order. The runner keeps
step N's ids on the device and fills those slots of N+1's input ids there; input_ids holds 0 at
those places. A plan may refer only to the step submitted just before it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llm_playground.kernels.mask import MaskSpec
from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.engine.token_choice import TokenChoice


@dataclass(frozen=True)
class Draw:
    """One token to sample from a logits row. `key` names the random stream (a runner keeps one
    generator per key, seeded from `seed` + `sample_index`, until the key is released), so a
    request's samples stay reproducible whatever else shares the batch."""
    key: tuple[int, int]                 # (request id, sample index): opaque to the runner
    params: SamplingParams
    seed: int | None
    sample_index: int
    seen_ids: tuple[int, ...] = ()       # ids for the repetition penalty (empty when it is 1.0)


@dataclass(frozen=True)
class Verify:
    """Speculative verification of one batch row: its tokens are the last accepted id and `k`
    proposals (input_ids[cu[row] : cu[row] + k + 1]), and its LogitsRequest covers the k + 1
    logits rows of those tokens, in order. Proposals come from the plan (prompt lookup) or,
    when `proposals` is empty, from the runner's draft model, which first computes its own K/V
    for positions [draft_start, start] (`catchup_ids`, the last of them the row's first input)
    and then proposes k tokens into the row's placeholder ids (model/engine/draft_runner.py).
    The row's one draw decides acceptance (model/engine/spec_verify.py); its result is the m + 1
    ids emitted (m proposals accepted, then the target's own token)."""
    row: int                             # the batch row
    k: int
    proposals: tuple[int, ...] = ()      # () = the draft model proposes
    draft_start: int = 0
    catchup_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class DraftCatchup:
    """The draft model's own catch-up over one batch row, without a verification: its K/V
    for positions [start, start + len(ids)) (ids the target has computed already), in a
    draft-only forward that needs no logits (model/engine/draft_runner.py). The engine sizes
    these by the step's token budget (model/engine/spec_planner.py), so a long prompt's draft
    prefill is spread over steps, never one forward larger than the budget."""
    row: int                             # the batch row
    start: int
    ids: tuple[int, ...]


@dataclass
class LogitsRequest:
    """What to do with one logits row: sample `draws` (several draws from one row: the n > 1
    fork of a prompt), and/or return the `top_logprobs` best log-probabilities (beam search).
    With `verify` set it covers that verification's k + 1 logits rows (one draw)."""
    draws: list[Draw] = field(default_factory=list)
    top_logprobs: int = 0
    verify: Verify | None = None

    @property
    def num_rows(self) -> int:
        """Logits rows this request covers: 1, or k + 1 for a verification."""
        return 1 if self.verify is None else self.verify.k + 1


@dataclass
class BatchPlan:
    """The rows of one step that share one attention mask (one forward each)."""
    mask: MaskSpec
    input_ids: np.ndarray                # (T,) int64
    seq_rows: np.ndarray                 # (B,) int32 row of the persistent block table
    starts: np.ndarray                   # (B,) int32
    cu_seqlens_q: np.ndarray             # (B+1,) int32
    rope_offsets: np.ndarray             # (B,) int32
    logits_rows: np.ndarray              # (N,) int64
    logits: list[LogitsRequest]          # N entries, one per logits row
    num_decodes: int                     # rows 0..num_decodes-1 have q_len 1
    max_q_len: int
    max_context_len: int
    table_width: int                     # the longest block table of the batch
    has_holes: bool                      # some table has a -1 inside its context
    has_prefix: bool                     # some prefill chunk follows cached tokens
    has_offsets: bool = False            # some rope_offsets entry is not 0
    deferred_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # (P,)
    deferred_draws: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))    # (P,)
    # Speculative verification: rows num_decodes .. num_decodes + num_verify - 1 are verify
    # rows of verify_q_len tokens each (the attention kernels' decode path takes them).
    num_verify: int = 0
    verify_q_len: int = 0
    draft_catchups: list[DraftCatchup] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        """Sequences (rows) in this batch."""
        return int(self.starts.shape[0])

    @property
    def num_tokens(self) -> int:
        """New tokens in this batch, all rows together."""
        return int(self.input_ids.shape[0])

    @property
    def context_lens(self) -> np.ndarray:
        """(B,) int32 keys per row after this step's write: starts + q_len."""
        return self.starts + np.diff(self.cu_seqlens_q)


@dataclass
class StepPlan:
    """Everything the runner does in one step, in this order: write the changed block-table
    rows, re-rotate the keys of blocks that a sliding pattern compacted (decided at the end of
    the last step), copy blocks (copy-on-write), run each batch's forward, sample, and forget
    the released draw keys."""
    batches: list[BatchPlan] = field(default_factory=list)
    # Block-table rows changed since the previous plan, whole: (K,) int32 row ids, (K, W) int32.
    table_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    table_data: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    rerotations: list[tuple[int, list[int]]] = field(default_factory=list)   # (delta, block ids)
    block_copies: list[tuple[int, int]] = field(default_factory=list)        # (src, dst)
    released_keys: list[tuple[int, int]] = field(default_factory=list)

    @property
    def num_logits_rows(self) -> int:
        """Logits rows over all batches of the step (a verification counts its k + 1)."""
        return sum(r.num_rows for b in self.batches for r in b.logits)

    @property
    def num_draws(self) -> int:
        """Draws over all logits rows of the step (what a later plan's deferred_draws index)."""
        return sum(len(r.draws) for b in self.batches for r in b.logits)


@dataclass
class StepResult:
    """What the runner hands back, per logits row in plan order (batches concatenated):
    `tokens[i]` has one id per draw of row i (a verification: its m + 1 emitted ids); `top_logprobs[i]` is (ids, logprobs) sorted best
    first, numpy int64 / float32, or None when the row asked for none. `choices` is empty unless
    some draw's params set `logprobs`; then `choices[i]` is, parallel to `tokens[i]`, a
    TokenChoice per draw (None for a draw that did not ask), or None for a row with none."""
    tokens: list[list[int]] = field(default_factory=list)
    top_logprobs: list[tuple[np.ndarray, np.ndarray] | None] = field(default_factory=list)
    choices: list[list[TokenChoice | None] | None] = field(default_factory=list)
