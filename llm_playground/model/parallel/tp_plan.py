"""Which part of the model each tensor-parallel rank holds (Megatron-style), as plain data.

`shard_plan(cfg, world)` -> one `RankShare` per rank: the query heads and KV heads it computes
(whole GQA groups), its slice of the MLP width and its padded slice of the vocabulary.

Rules, in order:
- KV heads >= ranks: the KV heads are dealt out in whole GQA groups (each KV head with its
  query heads), as evenly as they go: 3 KV heads over 2 ranks is 2 + 1 (6 + 3 query heads for
  the default model's 9 / 3). Unequal shares are allowed: the row-parallel all-reduce sums
  (T, H) partials whatever their widths.
- KV heads < ranks: each KV head is replicated on world / kv ranks (vLLM does the same), which
  split its group's query heads; refused unless world is a multiple of the KV heads and the
  group size a multiple of the replicas.
- More ranks than query heads is refused.
- MLP width: contiguous, as even as it goes. Vocabulary: ceil(V / world) rows per rank, the
  last rank's slice padded with zero rows (all_gather needs equal shapes; the pad is cut off).
This module computes indices only; tp_shard.py slices the tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

from llm_playground.model.network.config import ModelConfig


class ShardError(ValueError):
    """This model cannot be split over that many ranks; the message says why and what works."""


@dataclass(frozen=True)
class RankShare:
    """What rank `rank` of `world` holds: global head indices, MLP and vocabulary ranges."""
    rank: int
    world: int
    q_heads: tuple[int, ...]           # global query head ids, ascending
    kv_heads: tuple[int, ...]          # global KV head ids, ascending
    ffn: tuple[int, int]               # [start, end) of the intermediate size
    vocab: tuple[int, int]             # [start, end) of the padded vocabulary (end may pass V)
    replicated_kv: bool = False        # True: these KV heads are also held by other ranks


def _even(n: int, world: int) -> list[tuple[int, int]]:
    """[start, end) of n items split in `world` contiguous parts whose sizes differ by <= 1."""
    base, extra = divmod(n, world)
    out, s = [], 0
    for r in range(world):
        e = s + base + (1 if r < extra else 0)
        out.append((s, e))
        s = e
    return out


def valid_worlds(cfg: ModelConfig, upto: int = 8) -> list[int]:
    """Rank counts in 1..upto that `shard_plan` accepts for this config (for messages)."""
    return [w for w in range(1, upto + 1) if not isinstance(_plan(cfg, w), str)]


def shard_plan(cfg: ModelConfig, world: int) -> list[RankShare]:
    """One RankShare per rank (see the module docstring); ShardError when it cannot split."""
    plan = _plan(cfg, world)
    if isinstance(plan, str):
        ok = ", ".join(map(str, valid_worlds(cfg))) or "none"
        raise ShardError(f"tensor parallel {world}: {plan} (sizes that work for this model: {ok})")
    return plan


def _plan(cfg: ModelConfig, world: int) -> list[RankShare] | str:
    """The shares, or why there are none (one clause)."""
    Hq, Hkv = cfg.num_heads, cfg.num_kv_heads
    group = Hq // Hkv                                      # query heads per KV head
    if world < 1:
        return "the size must be at least 1"
    if world > Hq:
        return f"the model has only {Hq} query heads"
    if cfg.intermediate_size < world:
        return f"the MLP width {cfg.intermediate_size} is smaller than the rank count"
    ffn = _even(cfg.intermediate_size, world)
    vrows = -(-cfg.vocab_size // world)
    vocab = [(r * vrows, (r + 1) * vrows) for r in range(world)]
    shares = []
    if Hkv >= world:
        for r, (s, e) in enumerate(_even(Hkv, world)):
            kv = tuple(range(s, e))
            q = tuple(h for k in kv for h in range(k * group, (k + 1) * group))
            shares.append(RankShare(r, world, q, kv, ffn[r], vocab[r]))
        return shares
    replicas = world // Hkv
    if world % Hkv or group % replicas:
        return (f"{Hkv} KV heads cannot be replicated evenly over {world} ranks "
                f"({Hq} query heads, {group} per KV head)")
    per = group // replicas
    for r in range(world):
        k, part = divmod(r, replicas)
        q = tuple(range(k * group + part * per, k * group + (part + 1) * per))
        shares.append(RankShare(r, world, q, (k,), ffn[r], vocab[r], replicated_kv=True))
    return shares


def describe_shares(shares: list[RankShare], head_dim: int, num_layers: int,
                    kv_elem_bytes: int, block_size: int) -> list[dict]:
    """Per rank: heads held and KV bytes per block on that rank (the UI's per-rank share)."""
    return [dict(rank=s.rank, q_heads=len(s.q_heads), kv_heads=len(s.kv_heads),
                 kv_head_ids=list(s.kv_heads), replicated_kv=s.replicated_kv,
                 bytes_per_block=2 * num_layers * len(s.kv_heads) * head_dim * kv_elem_bytes
                 * block_size) for s in shares]
