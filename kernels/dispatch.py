"""One switch between the Triton kernels and the torch references.

`auto` (default): Triton for CUDA tensors when triton imports, the reference otherwise.
`reference`: always the torch reference. `triton`: always Triton (CPU tensors only work under
TRITON_INTERPRET=1, which is how the CPU tests run the kernels).
"""
from __future__ import annotations

import os

import torch

from kernels import reference as ref

_BACKEND = os.environ.get("KERNELS_BACKEND", "auto")
_VALID = ("auto", "reference", "triton")


def set_backend(name: str) -> None:
    global _BACKEND
    if name not in _VALID:
        raise ValueError(f"unknown kernels backend {name!r}; choose one of {', '.join(_VALID)}")
    _BACKEND = name


def get_backend() -> str:
    return _BACKEND


def _use_triton(t: torch.Tensor) -> bool:
    if _BACKEND == "reference":
        return False
    if _BACKEND == "triton":
        return True
    return t.is_cuda


def paged_attention(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables,
                    max_q_len, max_context_len, scale, mask=None, num_decodes=0, out=None,
                    holes=True, k_new=None, v_new=None, prefix=True):
    from kernels.mask import DENSE
    mask = DENSE if mask is None else mask
    if _use_triton(q):
        from kernels import triton_attention  # imported lazily: triton is optional on CPU
        return triton_attention.paged_attention(q, k_cache, v_cache, cu_seqlens_q, context_lens,
                                                block_tables, max_q_len, max_context_len, scale,
                                                mask, num_decodes, out, holes, k_new, v_new,
                                                prefix)
    # The reference reads every key from the cache; k_new / v_new (the same values, packed) are
    # only a faster source for the Triton prefill kernel.
    return ref.paged_attention_ref(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables,
                                   max_q_len, max_context_len, scale, mask, num_decodes, out, holes)


def write_kv(k, v, k_cache, v_cache, slot_mapping):
    if _use_triton(k):
        from kernels import kv_write
        return kv_write.write_kv(k, v, k_cache, v_cache, slot_mapping)
    return ref.write_kv_ref(k, v, k_cache, v_cache, slot_mapping)


def rope_write_kv(q, k, v, positions, cos, sin, k_cache, v_cache, slot_mapping, return_k=False):
    if _use_triton(q):
        from kernels import rope_triton as rope_kernel
        return rope_kernel.rope_write_kv(q, k, v, positions, cos, sin, k_cache, v_cache,
                                         slot_mapping, return_k)
    return ref.rope_write_kv_ref(q, k, v, positions, cos, sin, k_cache, v_cache, slot_mapping,
                                 return_k)


def rms_norm(x, weight, eps, residual=None):
    if _use_triton(x):
        from kernels import rmsnorm
        return rmsnorm.rms_norm(x, weight, eps, residual)
    return ref.rms_norm_ref(x, weight, eps, residual)


def silu_and_mul(gate_up):
    if _use_triton(gate_up):
        from kernels import swiglu
        return swiglu.silu_and_mul(gate_up)
    return ref.silu_and_mul_ref(gate_up)


def rope(q, k, positions, cos, sin):
    if _use_triton(q):
        from kernels import rope_triton as rope_kernel
        return rope_kernel.rope(q, k, positions, cos, sin)
    return ref.rope_ref(q, k, positions, cos, sin)
