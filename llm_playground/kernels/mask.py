"""The attention mask every attention path implements, as four integers.

`MaskSpec` is the one description of an attention pattern that the kernels see. It does not
parse user strings or draw pictures (that is `model/engine/attention_patterns.py`); it only says which key
positions a query position may attend to:

    allowed(i, j) = j <= i and (
        dense
        or (window > 0 and i - j < window)        # local: the last `window` keys, itself included
        or (stride > 0 and (i - j) % stride == 0) # atrous / dilated: every `stride`-th key back
        or j < sinks                              # StreamingLLM attention sinks
    )
    dense = window == 0 and stride == 0

i and j are *logical* positions in the sequence (block index * block_size + offset), so a block
that was freed from the paged cache (a hole, -1 in the block table) keeps the numbering of the
others. Patterns: dense = MaskSpec(); local:W = MaskSpec(window=W); atrous:K = MaskSpec(stride=K);
sparse:W,K = MaskSpec(window=W, stride=K); streaming:S,W = MaskSpec(window=W, sinks=S).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MaskSpec:
    """A mask beyond causal: a local window, an atrous stride, and sinks that stay visible."""
    window: int = 0  # 0 = no local window term
    stride: int = 0  # 0 = no atrous term
    sinks: int = 0   # leading tokens always visible (only meaningful with window or stride)

    def __post_init__(self) -> None:
        for name in ("window", "stride", "sinks"):
            if getattr(self, name) < 0:
                raise ValueError(f"MaskSpec.{name} must be >= 0, got {getattr(self, name)}")
        if self.sinks and not (self.window or self.stride):
            raise ValueError("MaskSpec.sinks needs a window or a stride (dense already sees every key)")

    @property
    def is_dense(self) -> bool:
        """True when there is no window and no stride: plain causal attention."""
        return self.window == 0 and self.stride == 0

    def allowed(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """Boolean mask broadcast over q_pos[..., None] and k_pos[None, ...] (or any broadcastable shapes)."""
        causal = k_pos <= q_pos
        if self.is_dense:
            return causal
        dist = q_pos - k_pos
        ok = torch.zeros_like(causal)
        if self.window:
            ok |= dist < self.window
        if self.stride:
            ok |= (dist % self.stride) == 0
        if self.sinks:
            ok |= k_pos < self.sinks
        return causal & ok

    def dense_matrix(self, n: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """(n, n) bool token-level mask for a sequence of n tokens starting at position 0."""
        pos = torch.arange(n, device=device)
        return self.allowed(pos[:, None], pos[None, :])


DENSE = MaskSpec()
