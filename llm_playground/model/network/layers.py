"""One Llama decoder layer over a packed batch, reading and writing K/V through the paged cache.

Pre-norm attention (fused q/k/v projection, RoPE, K/V write into physical slots, paged
attention through the block tables, output projection) then a pre-norm SwiGLU MLP (fused
gate/up projection). All heavy lifting goes through the `kernels` dispatchers, so the Triton
kernels replace the torch references on CUDA without a change here. Decode-sized batches (at most
16 rows, on the Triton path, plain weights) fold each norm into the projection after it and the
SwiGLU into the down projection (kernels/fused_linear.py): six launches per layer instead of
nine. Projections may be plain (model/network/linear.py) or weight-only quantised
(model/network/quant_linear.py; the fused kernels are then skipped); the caches may hold 8-bit
codes with scales (kv_scales). This module does not load files.
"""
from __future__ import annotations

import torch
from torch import nn

from llm_playground.kernels.dispatch import (fused_linear_ok, paged_attention, rms_norm, rms_norm_linear, rope,
                              rope_write_kv, silu_and_mul, silu_mul_linear)
from llm_playground.model.network.batch import AttentionBatch
from llm_playground.model.network.config import ModelConfig
from llm_playground.model.network.linear import Linear


class LlamaDecoderLayer(nn.Module):
    """One Llama decoder layer: RMSNorm, fused QKV projection, paged attention, output projection,
    RMSNorm and the SwiGLU MLP (fused gate|up)."""
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, device: torch.device | str) -> None:
        super().__init__()
        H, D = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, D
        self.q_size, self.kv_size = cfg.num_heads * D, cfg.num_kv_heads * D
        self.eps = cfg.rms_norm_eps
        self.scale = D ** -0.5
        empty = lambda *shape: torch.empty(shape, dtype=dtype, device=device)  # noqa: E731
        self.input_norm = nn.Parameter(empty(H), requires_grad=False)
        self.post_attention_norm = nn.Parameter(empty(H), requires_grad=False)
        self.qkv_proj = Linear(empty(self.q_size + 2 * self.kv_size, H))        # q | k | v rows
        self.o_proj = Linear(empty(H, self.q_size))
        self.gate_up_proj = Linear(empty(2 * cfg.intermediate_size, H))        # gate | up rows
        self.down_proj = Linear(empty(H, cfg.intermediate_size))

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normed hidden (T, H) -> q (T, Hq, D), k (T, Hkv, D), v (T, Hkv, D), before RoPE."""
        return self.split_qkv(self.qkv_proj(x))

    def split_qkv(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T, (Hq + 2 Hkv) D) -> views q (T, Hq, D), k (T, Hkv, D), v (T, Hkv, D)."""
        T = qkv.shape[0]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(T, self.num_heads, self.head_dim)                       # (T, Hq, D)
        k = k.view(T, self.num_kv_heads, self.head_dim)                    # (T, Hkv, D)
        v = v.view(T, self.num_kv_heads, self.head_dim)                    # (T, Hkv, D)
        return q, k, v

    def attention_qkv(self, x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor,
                      sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normed hidden (T, H) -> q (T, Hq, D), k (T, Hkv, D) after RoPE, v (T, Hkv, D)."""
        q, k, v = self.project_qkv(x)
        q, k = rope(q, k, positions, cos, sin)
        return q, k, v

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None, batch: AttentionBatch,
                k_cache: torch.Tensor, v_cache: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor, kv_scales: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (T, H), residual (T, H) or None -> (mlp out (T, H), residual (T, H)).
        kv_scales: (k_scale, v_scale) (NB, BS, Hkv) when the caches hold 8-bit codes.

        The residual add is folded into the next norm (kernels.rms_norm with residual), so the
        caller adds the last layer's output to the residual in the final norm.
        """
        T = hidden.shape[0]
        fused = fused_linear_ok(hidden, self.qkv_proj.weight)   # decode-sized batch on Triton
        if fused:
            qkv, residual = rms_norm_linear(hidden, self.input_norm, self.eps, residual,
                                            self.qkv_proj.weight)     # (T, (Hq + 2 Hkv) D)
            q, k, v = self.split_qkv(qkv)
        else:
            if residual is None:
                residual = hidden
                x = rms_norm(hidden, self.input_norm, self.eps)       # (T, H)
            else:
                x, residual = rms_norm(hidden, self.input_norm, self.eps, residual)
            q, k, v = self.project_qkv(x)
        k_new = v_new = None
        if batch.max_q_len > 1 and batch.mask.is_dense:
            # Prefill chunks: keep the rotated k packed too, so the prefill kernel reads the new
            # tokens' K/V from (k_new, v) instead of gathering them back through the table.
            q, k_new = rope_write_kv(q, k, v, batch.positions, cos, sin, k_cache, v_cache,
                                     batch.slot_mapping, return_k=True, kv_scales=kv_scales)
            v_new = v
        else:
            q = rope_write_kv(q, k, v, batch.positions, cos, sin, k_cache, v_cache,
                              batch.slot_mapping, kv_scales=kv_scales)  # rotated q (T, Hq, D)
        o = paged_attention(q, k_cache, v_cache, batch.cu_seqlens_q, batch.context_lens,
                            batch.block_tables, batch.max_q_len, batch.max_context_len,
                            self.scale, batch.mask, batch.num_decodes, holes=batch.has_holes,
                            k_new=k_new, v_new=v_new, prefix=batch.has_prefix,
                            kv_scales=kv_scales, num_verify=batch.num_verify,
                            verify_q_len=batch.verify_q_len)                 # (T, Hq, D)
        hidden = self.o_proj(o.reshape(T, self.q_size))                      # (T, H)
        if fused:
            gate_up, residual = rms_norm_linear(hidden, self.post_attention_norm, self.eps,
                                                residual, self.gate_up_proj.weight)  # (T, 2I)
        else:
            x, residual = rms_norm(hidden, self.post_attention_norm, self.eps, residual)
            gate_up = self.gate_up_proj(x)                                   # (T, 2I)
        # (a tensor-parallel down_proj all-reduces its output: parallel/tp_layers.py; not fused)
        if (fused and fused_linear_ok(gate_up, self.down_proj.weight)       # MLP width small too
                and not getattr(self.down_proj, "reduces_output", False)):
            return silu_mul_linear(gate_up, self.down_proj.weight), residual  # (T, H)
        return self.down_proj(silu_and_mul(gate_up)), residual               # (T, H)
