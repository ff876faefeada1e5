"""Torch reference implementations of every kernel: the CPU path and the oracle for Triton.

Each function here has the same signature as its Triton twin (see kernels/__init__.py for the
dispatch). These are written for clarity first and CPU speed second; they never keep a
contiguous copy of the KV cache: attention gathers each sequence's keys and values through its
block table for the duration of one call, exactly what a paged kernel reads.

Shapes: T = new tokens in the batch, B = sequences, Hq / Hkv = query / KV heads, D = head dim,
NB = physical blocks, BS = block size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from llm_playground.kernels.kv_quant import dequantize_kv, quantize_kv
from llm_playground.kernels.mask import DENSE, MaskSpec


def paged_attention_ref(
    q: torch.Tensor,             # (T, Hq, D)
    k_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    v_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    cu_seqlens_q: torch.Tensor,  # (B+1,) int32
    context_lens: torch.Tensor,  # (B,) int32, keys per sequence including this step's new ones
    block_tables: torch.Tensor,  # (B, max_blocks) int32, -1 = no block
    max_q_len: int,
    max_context_len: int,
    scale: float,
    mask: MaskSpec = DENSE,
    num_decodes: int = 0,
    out: torch.Tensor | None = None,  # (T, Hq, D) written in place when given
    holes: bool = True,          # a hint for the Triton kernel; the reference always skips holes
    k_scale: torch.Tensor | None = None,  # (NB, BS, Hkv) float16: the caches hold 8-bit codes
    v_scale: torch.Tensor | None = None,  # (kernels/kv_quant.py), dequantised as gathered
) -> torch.Tensor:
    """Causal attention of each sequence's new tokens over all its cached keys (prefix + new)."""
    T, Hq, D = q.shape
    BS, Hkv = k_cache.shape[1], k_cache.shape[2]
    if out is None:
        out = torch.empty_like(q)
    cu = cu_seqlens_q.tolist()
    ctx = context_lens.tolist()
    for b in range(len(ctx)):
        q0, q1, n = cu[b], cu[b + 1], ctx[b]
        q_len = q1 - q0
        if q_len == 0:
            continue
        n_blocks = (n + BS - 1) // BS
        table = block_tables[b, :n_blocks].long()                       # (nb,)
        holes = table < 0
        k = k_cache[table.clamp(min=0)].reshape(n_blocks * BS, Hkv, D)[:n]  # (n, Hkv, D)
        v = v_cache[table.clamp(min=0)].reshape(n_blocks * BS, Hkv, D)[:n]
        if k_scale is not None:                                        # 8-bit codes -> q's dtype
            k = dequantize_kv(k, k_scale[table.clamp(min=0)].reshape(n_blocks * BS, Hkv)[:n], q.dtype)
            v = dequantize_kv(v, v_scale[table.clamp(min=0)].reshape(n_blocks * BS, Hkv)[:n], q.dtype)
        qb = q[q0:q1]                                                  # (q_len, Hq, D)
        attn_mask = None
        is_causal = False
        if mask.is_dense and not bool(holes.any()):
            if q_len == n:
                is_causal = True
            elif q_len > 1:
                attn_mask = _mask(mask, n, q_len, holes, BS, q.device)
        else:
            attn_mask = _mask(mask, n, q_len, holes, BS, q.device)
        o = F.scaled_dot_product_attention(
            qb.transpose(0, 1).unsqueeze(0),                           # (1, Hq, q_len, D)
            k.transpose(0, 1).unsqueeze(0),                            # (1, Hkv, n, D)
            v.transpose(0, 1).unsqueeze(0),
            attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=Hq != Hkv,
        )                                                              # (1, Hq, q_len, D)
        out[q0:q1] = o[0].transpose(0, 1)
    return out


def _mask(mask: MaskSpec, n: int, q_len: int, holes: torch.Tensor, BS: int, device) -> torch.Tensor:
    q_pos = torch.arange(n - q_len, n, device=device)
    k_pos = torch.arange(n, device=device)
    allowed = mask.allowed(q_pos[:, None], k_pos[None, :])             # (q_len, n)
    if bool(holes.any()):
        allowed &= ~holes.repeat_interleave(BS)[:n][None, :]
    # A query row with no visible key would give NaN; the diagonal is always visible unless the
    # caller freed the query's own block, which is a bug we surface loudly.
    return allowed


def write_kv_ref(
    k: torch.Tensor,             # (T, Hkv, D)
    v: torch.Tensor,             # (T, Hkv, D)
    k_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    v_cache: torch.Tensor,       # (NB, BS, Hkv, D)
    slot_mapping: torch.Tensor,  # (T,) int64, -1 = skip
    k_scale: torch.Tensor | None = None,   # (NB, BS, Hkv) float16: quantise into 8-bit codes
    v_scale: torch.Tensor | None = None,
) -> None:
    """Scatter new K/V rows into their physical slots (block_id * BS + offset); with scales,
    as 8-bit codes and one scale per (token, head) (kernels/kv_quant.py)."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    if k_scale is not None:
        for x, cache, sc in ((k, k_cache, k_scale), (v, v_cache, v_scale)):
            codes, scales = quantize_kv(x[keep], cache.dtype)
            flat = cache.view(torch.uint8).view(-1, *cache.shape[2:])       # fp8 has no index_copy_
            flat.index_copy_(0, slots, codes.view(torch.uint8))
            sc.view(-1, sc.shape[2]).index_copy_(0, slots, scales)
        return
    k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, slots, k[keep].to(k_cache.dtype))
    v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, slots, v[keep].to(v_cache.dtype))


def rope_write_kv_ref(q, k, v, positions, cos, sin, k_cache, v_cache, slot_mapping,
                      return_k=False, k_scale=None, v_scale=None):
    """RoPE on q and k, then the rotated k and v into their slots; returns the rotated q (and
    with return_k the rotated k)."""
    q, k = rope_ref(q, k, positions, cos, sin)
    write_kv_ref(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)
    return (q, k) if return_k else q


def rms_norm_ref(
    x: torch.Tensor,                        # (T, H)
    weight: torch.Tensor,                   # (H,)
    eps: float,
    residual: torch.Tensor | None = None,   # (T, H): when given, x + residual is normed and returned
):
    """RMSNorm as Llama does it (in float32, cast back). With residual: returns (normed, x + residual)."""
    if residual is not None:
        x = x + residual
        residual = x
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    normed = weight * normed.to(x.dtype)
    return normed if residual is None else (normed, residual)


def silu_and_mul_ref(gate_up: torch.Tensor) -> torch.Tensor:
    """(T, 2I) -> (T, I): silu(gate) * up, gate the first half."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def rms_norm_linear_ref(x, norm_weight, eps, residual, weight):
    """(T, H) -> (rms_norm(x + residual) @ weight.T (T, N), the new residual): the unfused ops."""
    if residual is None:
        return F.linear(rms_norm_ref(x, norm_weight, eps), weight), x
    normed, residual = rms_norm_ref(x, norm_weight, eps, residual)
    return F.linear(normed, weight), residual


def silu_mul_linear_ref(gate_up: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(T, 2I) -> (silu(gate) * up) @ weight.T (T, N)."""
    return F.linear(silu_and_mul_ref(gate_up), weight)


def rope_ref(
    q: torch.Tensor,          # (T, Hq, D)
    k: torch.Tensor,          # (T, Hkv, D)
    positions: torch.Tensor,  # (T,) int64
    cos: torch.Tensor,        # (max_pos, D/2) float32
    sin: torch.Tensor,        # (max_pos, D/2) float32
):
    """Rotary embedding, Hugging Face's rotate-half layout (first half / second half pairs)."""
    c = cos[positions].unsqueeze(1)   # (T, 1, D/2)
    s = sin[positions].unsqueeze(1)

    def rot(x):
        """x rotated by the gathered cos/sin (rotate-half), in float32, back in x's dtype."""
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)

    return rot(q), rot(k)
