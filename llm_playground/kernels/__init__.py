"""Attention and fused-op kernels for the paged KV cache: Triton on CUDA, torch references on CPU.

Public functions (same signature for both paths; see kernels/reference.py for the meaning of
every argument):

    paged_attention(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables,
                    max_q_len, max_context_len, scale, mask=DENSE, num_decodes=0, out=None,
                    holes=True,   # holes=False: no table has a -1 inside its context
                    k_new=None, v_new=None,  # the new tokens' K/V packed (T, Hkv, D): fast prefill
                    prefix=True,  # prefix=False: no prefill chunk follows cached tokens
                    num_verify=0, verify_q_len=0)  # speculative verify rows after the decodes
    write_kv(k, v, k_cache, v_cache, slot_mapping)
    rms_norm(x, weight, eps, residual=None)
    silu_and_mul(gate_up)
    rope(q, k, positions, cos, sin)
    rms_norm_linear(x, norm_weight, eps, residual, weight) -> (normed @ weight.T, new residual)
    silu_mul_linear(gate_up, weight) -> silu(gate) * up @ weight.T
        (decode-sized batches; fused_linear_ok(x, weight) says when the fused kernel applies)
    rope_write_kv(q, k, v, positions, cos, sin, k_cache, v_cache, slot_mapping,
                  return_k=False) -> rotated q (and the rotated k, packed, with return_k)
    quant_linear(x, packed_weight) -> x @ W.T, W weight-only 4/8-bit (kernels/quant_layout.py)

Dispatch: the Triton kernel runs when the tensors are on CUDA, the reference otherwise;
`set_backend("reference" | "triton" | "auto")` (or the env var KERNELS_BACKEND) forces one.
This package imports torch and triton only.
"""
from llm_playground.kernels.dispatch import (  # noqa: F401
    fused_linear_ok,
    get_backend,
    paged_attention,
    quant_linear,
    rms_norm,
    rms_norm_linear,
    rope,
    rope_write_kv,
    set_backend,
    set_fused_linear,
    silu_and_mul,
    silu_mul_linear,
    write_kv,
)
from llm_playground.kernels.mask import DENSE, MaskSpec  # noqa: F401
