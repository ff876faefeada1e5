"""One switch between the Triton kernels and the torch references.

`auto` (default): Triton for CUDA tensors when triton imports, the reference otherwise.
`reference`: always the torch reference. `triton`: always Triton (CPU tensors only work under
TRITON_INTERPRET=1, which is how the CPU tests run the kernels).
"""
from __future__ import annotations

import os

import torch

from llm_playground.kernels import reference as ref

_BACKEND = os.environ.get("KERNELS_BACKEND", "auto")
_VALID = ("auto", "reference", "triton")
# The fused norm/SwiGLU + projection kernels for decode-sized batches (kernels/fused_linear.py);
# benchmarks turn them off to measure what they bring.
_FUSED_LINEAR = os.environ.get("KERNELS_FUSED_LINEAR", "1") != "0"
_FUSED_MAX_ROWS, _FUSED_MAX_K = 16, 2048   # kernels/fused_linear.py MAX_ROWS, MAX_K (no triton here)


def set_backend(name: str) -> None:
    """Choose the kernels backend: auto, reference or triton (other names raise ValueError)."""
    global _BACKEND
    if name not in _VALID:
        raise ValueError(f"unknown kernels backend {name!r}; choose one of {', '.join(_VALID)}")
    _BACKEND = name


def get_backend() -> str:
    """The kernels backend now chosen."""
    return _BACKEND


def set_fused_linear(flag: bool) -> None:
    """Allow or forbid the fused norm/SwiGLU + linear kernels (see fused_linear_ok)."""
    global _FUSED_LINEAR
    _FUSED_LINEAR = bool(flag)


def fused_linear_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when rms_norm_linear / silu_mul_linear should run fused for x (T, K) and weight:
    the Triton path, at most fused_linear.MAX_ROWS rows of at most MAX_K features (the
    projection's input: hidden size for q|k|v and gate|up, the MLP width for down; the layer
    asks with the q|k|v weight and checks the down weight too), a plain weight of x's dtype.
    Otherwise the caller runs the ops apart (cuBLAS is faster for many rows and large weights)."""
    if not _FUSED_LINEAR or not _use_triton(x) or weight.dtype != x.dtype:
        return False
    return (x.dim() == 2 and x.shape[0] <= _FUSED_MAX_ROWS and weight.dim() == 2
            and weight.shape[1] <= _FUSED_MAX_K and weight.stride(-1) == 1)


def _use_triton(t: torch.Tensor) -> bool:
    if _BACKEND == "reference":
        return False
    if _BACKEND == "triton":
        return True
    return t.is_cuda


def paged_attention(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables,
                    max_q_len, max_context_len, scale, mask=None, num_decodes=0, out=None,
                    holes=True, k_new=None, v_new=None, prefix=True, kv_scales=None,
                    num_verify=0, verify_q_len=0):
    """Paged attention over the KV cache (Triton or reference); see paged_attention_ref.
    kv_scales: (k_scale, v_scale) when the caches hold 8-bit codes (kernels/kv_quant.py).
    num_verify / verify_q_len (speculative verification rows after the decodes) only route the
    Triton path (kernels/triton_attention.py); the reference handles any q_len per sequence."""
    from llm_playground.kernels.mask import DENSE
    mask = DENSE if mask is None else mask
    if _use_triton(q):
        from llm_playground.kernels import triton_attention  # imported lazily: triton is optional on CPU
        return triton_attention.paged_attention(q, k_cache, v_cache, cu_seqlens_q, context_lens,
                                                block_tables, max_q_len, max_context_len, scale,
                                                mask, num_decodes, out, holes, k_new, v_new,
                                                prefix, kv_scales, num_verify, verify_q_len)
    # The reference reads every key from the cache; k_new / v_new (the same values, packed) are
    # only a faster source for the Triton prefill kernel.
    ks, vs = kv_scales if kv_scales is not None else (None, None)
    return ref.paged_attention_ref(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables,
                                   max_q_len, max_context_len, scale, mask, num_decodes, out, holes,
                                   ks, vs)


def write_kv(k, v, k_cache, v_cache, slot_mapping, kv_scales=None):
    """Write k, v (T, Hkv, D) into the caches at slot_mapping (-1 = skip); with kv_scales
    (k_scale, v_scale), as 8-bit codes and per-token scales."""
    ks, vs = kv_scales if kv_scales is not None else (None, None)
    if _use_triton(k):
        from llm_playground.kernels import kv_write
        return kv_write.write_kv(k, v, k_cache, v_cache, slot_mapping, ks, vs)
    return ref.write_kv_ref(k, v, k_cache, v_cache, slot_mapping, ks, vs)


def rope_write_kv(q, k, v, positions, cos, sin, k_cache, v_cache, slot_mapping, return_k=False,
                  kv_scales=None):
    """RoPE on q and k, then k and v into their slots; returns rotated q (and k if return_k).
    With kv_scales (8-bit caches) the rotation and the quantising write are two launches."""
    if kv_scales is not None:
        q, k = rope(q, k, positions, cos, sin)
        write_kv(k, v, k_cache, v_cache, slot_mapping, kv_scales)
        return (q, k) if return_k else q
    if _use_triton(q):
        from llm_playground.kernels import rope_triton as rope_kernel
        return rope_kernel.rope_write_kv(q, k, v, positions, cos, sin, k_cache, v_cache,
                                         slot_mapping, return_k)
    return ref.rope_write_kv_ref(q, k, v, positions, cos, sin, k_cache, v_cache, slot_mapping,
                                 return_k)


def rms_norm(x, weight, eps, residual=None):
    """RMSNorm of x; with residual, of x + residual, returning (out, x + residual)."""
    if _use_triton(x):
        from llm_playground.kernels import rmsnorm
        return rmsnorm.rms_norm(x, weight, eps, residual)
    return ref.rms_norm_ref(x, weight, eps, residual)


def silu_and_mul(gate_up):
    """SwiGLU: silu(gate) * up for gate_up (..., 2I) -> (..., I)."""
    if _use_triton(gate_up):
        from llm_playground.kernels import swiglu
        return swiglu.silu_and_mul(gate_up)
    return ref.silu_and_mul_ref(gate_up)


def rope(q, k, positions, cos, sin):
    """Rotary embedding of q and k at `positions`: (q_out, k_out)."""
    if _use_triton(q):
        from llm_playground.kernels import rope_triton as rope_kernel
        return rope_kernel.rope(q, k, positions, cos, sin)
    return ref.rope_ref(q, k, positions, cos, sin)


def rms_norm_linear(x, norm_weight, eps, residual, weight):
    """(rms_norm(x + residual) @ weight.T, the new residual), fused on the Triton path."""
    if _use_triton(x):
        from llm_playground.kernels import fused_linear
        return fused_linear.rms_norm_linear(x, norm_weight, eps, residual, weight)
    return ref.rms_norm_linear_ref(x, norm_weight, eps, residual, weight)


def silu_mul_linear(gate_up, weight):
    """SwiGLU of gate_up followed by the linear `weight`, fused on the Triton path."""
    if _use_triton(gate_up):
        from llm_playground.kernels import fused_linear
        return fused_linear.silu_mul_linear(gate_up, weight)
    return ref.silu_mul_linear_ref(gate_up, weight)


def quant_linear(x, pw):
    """x (T, K) @ W.T for a PackedWeight W (kernels/quant_layout.py): the Triton kernels on the
    Triton path, the float32 oracle otherwise (the CPU model uses torch's int ops instead:
    model/network/quant_linear.py)."""
    if _use_triton(x):
        from llm_playground.kernels import quant_matmul
        return quant_matmul.quant_linear(x, pw)
    from llm_playground.kernels.quant_layout import quant_linear_ref
    return quant_linear_ref(x, pw)
