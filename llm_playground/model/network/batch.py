"""What one forward pass needs to know about the batch: positions, slots and block tables.

`AttentionBatch` is built by the engine (model/engine/engine.py) for each `step()` and read by the
model's attention layers and the kernels. It holds tensors only; it does not own the KV cache
and does not decide scheduling.

Layout (packed, no padding between sequences; prefills and decodes mixed in one batch):
- the batch holds B sequences; sequence b contributes q_len[b] >= 1 new tokens (a decode has 1,
  a prefill chunk has more); the new tokens of all sequences are concatenated: T = sum(q_len).
- sequence b already had context_lens[b] - q_len[b] tokens in the cache before this step (a
  cached prefix, earlier chunks, earlier decodes); after the K/V write it has context_lens[b].
- new token t of sequence b sits at logical position context_lens[b] - q_len[b] + t.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from llm_playground.kernels.mask import DENSE, MaskSpec


@dataclass
class AttentionBatch:
    """One forward's packed batch as the attention kernels read it: positions, slots, query
    offsets, context lengths, block tables, the mask, and host ints for the grids."""
    # (T,) int64 RoPE position of each new token. Equals the logical position, except where a
    # sliding pattern (StreamingLLM, local) freed blocks: then it is the position inside the
    # compacted cache (logical position - tokens evicted before it), see model/engine/attention_patterns.py.
    # Kernels never read it: they derive logical positions from context_lens and q_len.
    positions: torch.Tensor
    slot_mapping: torch.Tensor   # (T,) int64  physical slot = block_id * block_size + offset; -1 = do not write
    cu_seqlens_q: torch.Tensor   # (B+1,) int32 prefix sums of q_len
    context_lens: torch.Tensor   # (B,) int32  keys per sequence after this step's write (prefix + new)
    block_tables: torch.Tensor   # (B, max_blocks) int32 logical -> physical block; -1 = no block (unused or freed hole)
    max_q_len: int               # max(q_len), host int so kernels pick a grid without a sync
    max_context_len: int         # max(context_lens), host int
    mask: MaskSpec = field(default_factory=lambda: DENSE)
    # Sequences 0..num_decodes-1 have q_len == 1 (the engine orders decodes first), so the model
    # may run them through the paged decode kernel and the rest through the prefill kernel.
    num_decodes: int = 0
    # Rows of the packed hidden state whose logits are needed (the last new token of each
    # sequence that finishes its prompt or decodes); None = the last token of every sequence.
    logits_indices: torch.Tensor | None = None
    # False when no block table holds a hole (-1) inside its context: the prefill kernel then
    # skips per-key masking in the tiles left of the diagonal. True is always correct.
    has_holes: bool = True
    # False when no prefill chunk follows cached tokens (every chunk starts at position 0): the
    # prefill kernel's packed path then compiles without the cached-prefix loop. True is correct.
    has_prefix: bool = True
    # Speculative verification: sequences num_decodes..num_decodes+num_verify-1 each have
    # verify_q_len new tokens (the last accepted token and K proposals), so the Triton path runs
    # them through the decode kernel with several query tokens per sequence. 0 = none; the
    # reference path and the prefill kernel are correct for them either way.
    num_verify: int = 0
    verify_q_len: int = 0

    @property
    def num_seqs(self) -> int:
        """Sequences in the batch, as a host int."""
        return int(self.context_lens.shape[0])

    @property
    def num_tokens(self) -> int:
        """New tokens in the batch, all sequences together, as a host int."""
        return int(self.positions.shape[0])

    def to(self, device: torch.device | str) -> "AttentionBatch":
        """A copy on `device`: every tensor field moved (non_blocking), every other field kept.

        Built from dataclasses.fields, so a field added later is carried over without touching
        this method (an explicit constructor call here once dropped `has_prefix`).
        """
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):   # None (logits_indices unset) stays None
                moved[f.name] = value.to(device, non_blocking=True)
        return replace(self, **moved)
