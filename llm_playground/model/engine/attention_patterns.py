"""Attention patterns: names, token-level masks, tile maps for the kernels, and which blocks to free.

One `AttentionPattern` per user string `dense | local:W | atrous:K | sparse:W,K | streaming:S,W`.
It wraps a `kernels.mask.MaskSpec` (the one formula every attention path implements) and adds
what the rest of the runtime needs around it:

- `token_mask(n)`: the (n, n) boolean mask, for pictures and for tests (the reference path reads
  the MaskSpec itself);
- `block_map(spec, q_start, q_len, kv_len, q_tile, k_tile)`: which (query tile, key tile) pairs hold
  any allowed entry and which are fully allowed, computed in closed form per tile (no n x n mask),
  so a kernel can skip empty tiles and drop the mask on full ones;
- `freeable_blocks(num_tokens, block_size)`: logical blocks that no future query can see, which the
  engine frees from the paged cache (the block table keeps a -1 hole, numbering unchanged);
- `density(n)` and `downsample(mask, rows, cols)`: figures for the UI.

Design decision (see model/engine/eviction.py for the mechanics): keys are cached AFTER RoPE. Sliding
patterns (local:W and streaming:S,W) free blocks that fell wholly out of reach (past the window and
holding no sink); positions stay right by re-rotation: a sequence that evicted E tokens gives its
new tokens RoPE position logical - E, and when another block of BS tokens is evicted, the kept
non-sink keys are re-rotated by -BS (R(p - BS) = R(-BS) R(p)). Relative distances among kept
non-sink tokens are unchanged; the sinks sit at positions 0..S-1 and the window right after them,
as StreamingLLM assigns positions within the cache. The cost is amortised (window / BS tokens per
evicted block per layer) instead of rotating every key at every attention call. Dense, atrous and
sparse (local + atrous) free nothing: every past key stays reachable by some future query through
the stride term.

This module does not touch the KV cache or the block manager (model/engine/eviction.py and the engine
do), and does not run attention (kernels/ does).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from llm_playground.kernels.mask import MaskSpec

PATTERN_SYNTAX = "dense | local:W | atrous:K | sparse:W,K | streaming:S,W"
_ARITY = {"dense": 0, "local": 1, "atrous": 1, "sparse": 2, "streaming": 2}


class PatternError(ValueError):
    """A pattern string that does not parse; the message is one line meant for the user."""


def parse_pattern(text: str) -> "AttentionPattern":
    """'streaming:4,256' -> AttentionPattern(name='streaming:4,256', spec=MaskSpec(window=256, sinks=4))."""
    if not isinstance(text, str):
        raise PatternError(f"attention pattern must be a string like {PATTERN_SYNTAX!r}, got {text!r}")
    raw = text.strip().lower()
    kind, colon, args = raw.partition(":")
    if kind not in _ARITY:
        raise PatternError(f"unknown attention pattern {text!r}; expected {PATTERN_SYNTAX}")
    want = _ARITY[kind]
    parts = [p.strip() for p in args.split(",")] if colon else []
    if len(parts) != want:
        example = {"dense": "dense", "local": "local:256", "atrous": "atrous:8",
                   "sparse": "sparse:256,8", "streaming": "streaming:4,256"}[kind]
        raise PatternError(f"{kind} takes {want} number{'s' if want != 1 else ''} "
                           f"(e.g. {example!r}), got {text!r}")
    nums = []
    for p in parts:
        if not re.fullmatch(r"[0-9]+", p):
            raise PatternError(f"{text!r}: {p!r} is not a whole number")
        nums.append(int(p))
    if kind == "dense":
        spec = MaskSpec()
    elif kind == "local":
        _positive(text, "window W", nums[0])
        spec = MaskSpec(window=nums[0])
    elif kind == "atrous":
        _positive(text, "stride K", nums[0])
        spec = MaskSpec(stride=nums[0])
    elif kind == "sparse":
        _positive(text, "window W", nums[0])
        _positive(text, "stride K", nums[1])
        spec = MaskSpec(window=nums[0], stride=nums[1])
    else:
        _positive(text, "sink count S", nums[0])
        _positive(text, "window W", nums[1])
        spec = MaskSpec(window=nums[1], sinks=nums[0])
    return AttentionPattern(format_pattern(spec), spec)


def _positive(text: str, what: str, value: int) -> None:
    if value < 1:
        raise PatternError(f"{text!r}: {what} must be at least 1, got {value}")


def format_pattern(spec: MaskSpec) -> str:
    """The canonical string of a MaskSpec (inverse of parse_pattern)."""
    w, k, s = spec.window, spec.stride, spec.sinks
    if spec.is_dense:
        return "dense"
    if s and w and not k:
        return f"streaming:{s},{w}"
    if s:
        raise PatternError(f"{spec} has no pattern string (sinks only go with a window alone)")
    if w and k:
        return f"sparse:{w},{k}"
    return f"local:{w}" if w else f"atrous:{k}"


@dataclass(frozen=True)
class AttentionPattern:
    """A parsed attention pattern: its canonical name and the MaskSpec the kernels read."""
    name: str       # canonical string, parse_pattern(name) gives this pattern back
    spec: MaskSpec  # what the kernels and the reference path read
    # True when old blocks fall out of reach (a window and no stride): local and streaming.
    # Derived from `spec` once, a plain field: the engine reads it per sequence per step.
    evicts: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if format_pattern(self.spec) != self.name:
            raise PatternError(f"pattern name {self.name!r} does not match its spec {self.spec}")
        object.__setattr__(self, "evicts", self.spec.window > 0 and self.spec.stride == 0)

    def __str__(self) -> str:
        return self.name

    @property
    def kind(self) -> str:
        """The pattern's family, its name up to any ':' (dense, local, streaming, ...)."""
        return self.name.partition(":")[0]

    def token_mask(self, n: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """(n, n) bool, [i, j] = query i may attend to key j (logical positions 0..n-1)."""
        if n < 0:
            raise ValueError(f"token_mask needs n >= 0, got {n}")
        return self.spec.dense_matrix(n, device=device)

    def block_map(self, q_start, q_len, kv_len, q_tile: int, k_tile: int, device="cpu") -> "TileMap":
        """This pattern's tile map; see the module-level block_map."""
        return block_map(self.spec, q_start, q_len, kv_len, q_tile, k_tile, device=device)

    def freeable_blocks(self, num_tokens: int, block_size: int) -> range:
        """Logical blocks no later query can see; see the module-level freeable_blocks."""
        return freeable_blocks(self.spec, num_tokens, block_size)

    def density(self, n: int) -> float:
        """Percent of the causal pairs (n(n+1)/2) this pattern keeps; dense = 100."""
        if n < 1:
            raise ValueError(f"density needs n >= 1, got {n}")
        kept = 0
        pos = torch.arange(n)
        for r0 in range(0, n, 1024):  # row chunks keep memory at 1024 x n
            rows = pos[r0:r0 + 1024]
            kept += int(self.spec.allowed(rows[:, None], pos[None, :]).sum())
        return 100.0 * kept / (n * (n + 1) // 2)


@dataclass(frozen=True)
class TileMap:
    """Per (query tile, key tile): `any` = at least one allowed entry; `full` = every entry allowed.

    Shapes (NQ, NK), or (B, NQ, NK) when block_map got per-sequence tensors. Entries outside a
    sequence (tile past q_len or kv_len) are neither. full implies any.
    """
    any: torch.Tensor   # bool
    full: torch.Tensor  # bool


def block_map(spec: MaskSpec, q_start, q_len, kv_len, q_tile: int, k_tile: int,
              device: str | torch.device = "cpu") -> TileMap:
    """Closed-form tile map for queries at logical positions q_start .. q_start+q_len-1 over keys
    0 .. kv_len-1 (usually q_start = kv_len - q_len), tiles of q_tile queries by k_tile keys.

    q_start, q_len, kv_len: ints (result (NQ, NK)) or (B,) integer tensors (result (B, NQ, NK),
    NQ = ceil(max q_len / q_tile), NK = ceil(max kv_len / k_tile)). Cost: a handful of integer ops
    per tile; nothing of size q_len x kv_len is built. Uses only torch and MaskSpec, so it can
    move into kernels/ unchanged.

    Exactness: for a tile with queries [qa, qb] and keys [ka, kb] the distances i - j cover every
    integer in [qa - kb, qb - ka], which turns each MaskSpec term into an interval test.
    """
    if q_tile < 1 or k_tile < 1:
        raise ValueError(f"tile sizes must be >= 1, got q_tile={q_tile}, k_tile={k_tile}")
    batched = isinstance(q_start, torch.Tensor) and q_start.dim() == 1
    as_t = lambda x: torch.as_tensor(x, dtype=torch.int64, device=device).reshape(-1, 1, 1)  # noqa: E731
    q0, ql, kl = as_t(q_start), as_t(q_len), as_t(kv_len)                   # (B, 1, 1)
    if bool((ql < 0).any()) or bool((kl < 0).any()) or bool((q0 < 0).any()):
        raise ValueError("block_map needs q_start, q_len, kv_len >= 0")
    nq = max(1, -(-int(ql.max()) // q_tile))
    nk = max(1, -(-int(kl.max()) // k_tile))
    a = torch.arange(nq, device=device).reshape(1, -1, 1) * q_tile          # (1, NQ, 1)
    c = torch.arange(nk, device=device).reshape(1, 1, -1) * k_tile          # (1, 1, NK)
    valid = (a < ql) & (c < kl)                                             # (B, NQ, NK)
    qa = q0 + a                                                             # first query of the tile
    qb = q0 + torch.minimum(a + q_tile, ql) - 1                             # last query
    ka = c.expand_as(valid)                                                 # first key
    kb = torch.minimum(c + k_tile, kl) - 1                                  # last key
    dmin, dmax = qa - kb, qb - ka                                           # distance range in the tile
    W, K, S = spec.window, spec.stride, spec.sinks
    if spec.is_dense:
        any_ = dmax >= 0
    else:
        any_ = torch.zeros_like(valid)
        if W:
            any_ |= (dmax >= 0) & (dmin <= W - 1)
        if K:
            lo = dmin.clamp(min=0)
            any_ |= (dmax >= lo) & (torch.div(dmax, K, rounding_mode="floor") * K >= lo)
        if S:
            any_ |= (ka <= S - 1) & (ka <= qb)
    # full: causal everywhere and no entry that every term rejects (non-sink, past window, off stride)
    full = dmin >= 0
    if not spec.is_dense:
        ka_ns = ka.clamp(min=S) if S else ka                                # first non-sink key
        lo = torch.maximum(dmin, torch.full_like(dmin, W)) if W else dmin
        hi = qb - ka_ns
        bad = (ka_ns <= kb) & (hi >= lo)
        if K == 1:
            bad = torch.zeros_like(bad)
        elif K > 1:
            bad &= (hi > lo) | (lo % K != 0)
        full &= ~bad
    any_ &= valid
    full &= valid & any_
    if not batched:
        any_, full = any_[0], full[0]
    return TileMap(any=any_, full=full)


def freeable_blocks(spec: MaskSpec, num_tokens: int, block_size: int) -> range:
    """Logical block indices that no query at position >= num_tokens can see.

    num_tokens = tokens whose K/V are already in the cache (the next query is at num_tokens).
    A key j is reachable by a future query i >= num_tokens iff j < sinks, or i - j < window for
    i = num_tokens (the nearest), or some stride multiple hits it (always, when stride > 0). So
    only window-without-stride patterns free anything: blocks holding no sink whose last key is
    <= num_tokens - window. The result is always a contiguous range (possibly empty) and includes
    blocks already freed, so callers free the ones not yet holes.
    """
    if num_tokens < 0 or block_size < 1:
        raise ValueError(f"freeable_blocks needs num_tokens >= 0 and block_size >= 1, "
                         f"got {num_tokens}, {block_size}")
    if spec.window == 0 or spec.stride != 0:
        return range(0)
    first = -(-spec.sinks // block_size)                       # first block without a sink
    end = (num_tokens - spec.window + 1) // block_size         # blocks b < end end at or before n - W
    return range(first, max(first, end))


def downsample(mask: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(n, m) bool mask -> (rows, cols) float32 grid, each cell the share of allowed entries it covers.

    Cells follow adaptive average pooling (bins of nearly equal size; when rows > n, rows repeat).
    """
    if mask.dim() != 2:
        raise ValueError(f"downsample needs a 2-D mask, got shape {tuple(mask.shape)}")
    if rows < 1 or cols < 1:
        raise ValueError(f"downsample needs rows, cols >= 1, got {rows}, {cols}")
    if mask.numel() == 0:
        return torch.zeros(rows, cols)
    grid = F.adaptive_avg_pool2d(mask.float()[None, None], (rows, cols))  # (1, 1, rows, cols)
    return grid[0, 0]
