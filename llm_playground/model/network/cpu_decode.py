"""The CPU fast path for a batch of decodes and verify rows: one decoder layer in fewer, larger torch ops.

On the CPU the torch reference kernels (kernels/reference.py) run every layer, and at batch 1
a layer's time is mostly per-op dispatch, not arithmetic: the general path gathers the RoPE
rows, checks the block table for holes, builds the key gather and converts dtypes again in each
of the 30 layers (about 200 aten calls a layer for the default model). When every sequence in
the batch decodes one token, or verifies a speculative proposal (the last accepted token and K
proposed ones, causal among themselves: model/engine/spec_verify.py), under a dense mask, with
float K/V caches and no holes in the tables, `plan_decode` does that work once per forward
(`DecodePlan`) and
`decode_layer` runs a layer as: norm, q|k|v matmul, one RoPE over q and k together (they are
adjacent in the fused projection's output), two slot writes, attention over a view of the
cache (a slice when a sequence's blocks are consecutive, one block gather otherwise), output
matmul, norm, gate|up matmul, SwiGLU, down matmul.

The arithmetic is the reference's, op for op (same float32 RoPE and norm, same
scaled_dot_product_attention, a verify row with the reference's causal mask), so the float32
mode still equals transformers and the general path bit for bit; only where the values come
from changes. What it does not do: prefill chunks, sliding / atrous masks, 8-bit KV caches,
holes, CUDA or the Triton interpreter: for those `plan_decode` returns None and the layer takes
its general path.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import torch
import torch.nn.functional as F

from llm_playground.kernels.dispatch import get_backend
from llm_playground.kernels.reference import rms_norm_ref
from llm_playground.model.network.batch import AttentionBatch


@dataclass
class DecodePlan:
    """What every layer of one decode forward shares: RoPE rows, write slots, key spans."""
    cos: torch.Tensor            # (T, 1, D) float32: cos rows twice (first half, second half)
    sin: torch.Tensor            # (T, 1, D) float32: -sin rows, then sin rows (rotate-half)
    slots: torch.Tensor          # (T,) int64 physical slots of the new K/V rows
    # per sequence: (first slot, n) when its n keys sit in consecutive slots, else
    # (block ids (nb,) int64, n): the keys are gathered block by block
    spans: list[tuple[int | torch.Tensor, int]]
    # per sequence: its new tokens (1 for a decode, K + 1 for a verify row), in batch order;
    # None = one each
    q_lens: list[int] | None = None

    def __post_init__(self) -> None:
        T = self.slots.shape[0]
        if self.q_lens is None:
            self.q_lens = [1] * len(self.spans)
        if (self.cos.shape != self.sin.shape or self.cos.shape[0] != T
                or len(self.spans) != len(self.q_lens) or sum(self.q_lens) != T
                or min(self.q_lens, default=1) < 1):
            raise ValueError(f"DecodePlan: cos {tuple(self.cos.shape)}, sin {tuple(self.sin.shape)}, "
                             f"{T} slots, {len(self.spans)} spans and q_lens {self.q_lens} must "
                             "agree (one span per sequence, its new tokens summing to the slots)")


def plan_decode(batch: AttentionBatch, cos: torch.Tensor, sin: torch.Tensor, block_size: int,
                device: torch.device, quantised_kv: bool) -> DecodePlan | None:
    """The shared work of a decode-only forward on the CPU, or None when the fast path does not
    apply (module docstring). cos / sin: the model's RoPE tables (P, D/2) float32."""
    if (device.type != "cpu" or get_backend() == "triton" or quantised_kv
            or not batch.mask.is_dense):
        return None
    # every sequence decodes one token, or is one of the verify rows (after the decodes)
    B, nv = batch.num_seqs, batch.num_verify
    v0 = batch.num_decodes
    if nv:
        if batch.verify_q_len < 2 or v0 + nv != B or batch.num_tokens != v0 + nv * batch.verify_q_len:
            return None
        q_lens = [1] * v0 + [batch.verify_q_len] * nv
        if batch.cu_seqlens_q.tolist() != _prefix_sums(q_lens):
            return None
    elif batch.max_q_len != 1 or batch.num_tokens != B:
        return None
    else:
        q_lens = [1] * B
    slots = batch.slot_mapping
    if batch.num_tokens and int(slots.min()) < 0:
        return None                                       # an unwritten row: general path
    tables = batch.block_tables.tolist()
    spans: list[tuple[int | torch.Tensor, int]] = []
    for row, n, ql in zip(tables, batch.context_lens.tolist(), q_lens):
        nb = -(-n // block_size)
        blocks = row[:nb]
        if n < ql or len(blocks) < nb or min(blocks) < 0:
            return None                                   # a hole: general path
        if blocks == list(range(blocks[0], blocks[0] + nb)):
            spans.append((blocks[0] * block_size, n))
        else:
            spans.append((torch.tensor(blocks, dtype=torch.long), n))
    c, s = cos[batch.positions], sin[batch.positions]                       # (T, D/2)
    return DecodePlan(cos=torch.cat((c, c), -1).unsqueeze(1),
                      sin=torch.cat((-s, s), -1).unsqueeze(1), slots=slots, spans=spans,
                      q_lens=q_lens)


def _prefix_sums(q_lens: list[int]) -> list[int]:
    """[0, q0, q0 + q1, ...]: cu_seqlens_q as a host list."""
    return list(accumulate(q_lens, initial=0))


def rope_qk(qk: torch.Tensor, plan: DecodePlan) -> torch.Tensor:
    """q and k heads together (T, Hq + Hkv, D) -> rotated, in qk's dtype: the reference's
    rotate-half in float32 (x1 c - x2 s, x2 c + x1 s), written as x * cos2 + swap(x) * sin2."""
    xf = qk.float()
    half = xf.shape[-1] // 2
    swapped = torch.cat((xf[..., half:], xf[..., :half]), -1)                # (T, H, D)
    return (xf * plan.cos + swapped * plan.sin).to(qk.dtype)


def attend(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, plan: DecodePlan,
           scale: float) -> torch.Tensor:
    """Rotated q (T, Hq, D), q_lens[b] queries of sequence b (1 for a decode, K + 1 for a verify
    row, causal among them) -> attention output (T, Hq * D) over each sequence's cached keys
    (the new ones already written)."""
    T, Hq, D = q.shape
    _, BS, Hkv, _ = k_cache.shape
    k_rows, v_rows = k_cache.view(-1, Hkv, D), v_cache.view(-1, Hkv, D)     # (NB * BS, Hkv, D)
    one = len(plan.spans) == 1
    out = None if one else q.new_empty(T, Hq * D)
    q0 = 0
    for b, ((where, n), ql) in enumerate(zip(plan.spans, plan.q_lens)):
        if isinstance(where, int):
            k, v = k_rows[where:where + n], v_rows[where:where + n]          # (n, Hkv, D) views
        else:
            k = k_cache.index_select(0, where).view(-1, Hkv, D)[:n]
            v = v_cache.index_select(0, where).view(-1, Hkv, D)[:n]
        qb = q[q0:q0 + ql]                                                   # (ql, Hq, D)
        # a verify row: the reference's mask (kernels/reference.py _mask, dense): query i at
        # position n - ql + i sees keys 0..n - ql + i
        causal = 1 < ql == n                          # no cached keys: plain causal, as there
        mask = None if ql == 1 or causal else (torch.arange(n)[None, :] <= torch.arange(n - ql, n)[:, None])
        if q.dtype == torch.float32:                   # the reference's op: exact as before
            o = F.scaled_dot_product_attention(
                qb.transpose(0, 1).unsqueeze(0),                             # (1, Hq, ql, D)
                k.transpose(0, 1).unsqueeze(0), v.transpose(0, 1).unsqueeze(0),  # (1, Hkv, n, D)
                attn_mask=mask, is_causal=causal, scale=scale,
                enable_gqa=Hq != Hkv)[0].transpose(0, 1)                     # (ql, Hq, D)
        else:
            if causal:
                mask = torch.ones(ql, n, dtype=torch.bool).tril()
            o = attend_upcast(qb, k, v, scale, mask)                         # (ql, Hq, D)
        if one:
            return o.reshape(ql, Hq * D)
        out[q0:q0 + ql] = o.reshape(ql, Hq * D)
        q0 += ql
    return out


def attend_upcast(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of ql queries (ql, Hq, D) over k, v (n, Hkv, D) of a 16-bit cache, as float32
    matmuls (Hkv, G ql, D) @ (Hkv, D, n) -> softmax -> @ (Hkv, n, D), back in q's dtype:
    (ql, Hq, D) (query head h reads KV head h // G, as enable_gqa does); mask (ql, n) bool or
    None (every key visible). At batch 1 on this CPU it takes a third to a half of
    scaled_dot_product_attention's time on bfloat16 (2026-12-07, n = 40 / 120: 30 / 41 us
    against 49 / 122 us, one thread)."""
    ql, Hq, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    qg = q.view(ql, Hkv, G, D).permute(1, 2, 0, 3).reshape(Hkv, G * ql, D)  # rows g * ql + i
    scores = torch.matmul(qg.float(), k.permute(1, 2, 0).float()).mul_(scale)  # (Hkv, G ql, n)
    if mask is not None:
        scores.masked_fill_(~mask.repeat(G, 1), float("-inf"))
    probs = torch.softmax(scores, -1)                                        # (Hkv, G ql, n) f32
    o = torch.matmul(probs, v.permute(1, 0, 2).float()).to(q.dtype)         # (Hkv, G ql, D)
    return o.view(Hkv, G, ql, D).permute(2, 0, 1, 3).reshape(ql, Hq, D)


def decode_layer(layer, hidden: torch.Tensor, residual: torch.Tensor | None,
                 k_cache: torch.Tensor, v_cache: torch.Tensor, plan: DecodePlan
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """LlamaDecoderLayer.forward for a planned decode batch: hidden (T, H), residual or None ->
    (mlp out (T, H), residual (T, H)), K/V of the T new tokens written at plan.slots."""
    T = hidden.shape[0]
    if residual is None:
        residual = hidden
        x = rms_norm_ref(hidden, layer.input_norm, layer.eps)               # (T, H)
    else:
        x, residual = rms_norm_ref(hidden, layer.input_norm, layer.eps, residual)
    qkv = layer.qkv_proj(x)                                                  # (T, (Hq + 2 Hkv) D)
    Hq, Hkv, D = layer.num_heads, layer.num_kv_heads, layer.head_dim
    qk = rope_qk(qkv[:, :layer.q_size + layer.kv_size].view(T, Hq + Hkv, D), plan)
    v = qkv[:, layer.q_size + layer.kv_size:].view(T, Hkv, D)
    k_cache.view(-1, Hkv, D).index_copy_(0, plan.slots, qk[:, Hq:].to(k_cache.dtype))
    v_cache.view(-1, Hkv, D).index_copy_(0, plan.slots, v.to(v_cache.dtype))
    o = attend(qk[:, :Hq], k_cache, v_cache, plan, layer.scale)             # (T, Hq D)
    hidden = layer.o_proj(o)                                                 # (T, H)
    x, residual = rms_norm_ref(hidden, layer.post_attention_norm, layer.eps, residual)
    gate_up = layer.gate_up_proj(x)                                          # (T, 2I)
    gate, up = gate_up.chunk(2, dim=-1)
    return layer.down_proj(F.silu(gate) * up), residual                      # (T, H)
