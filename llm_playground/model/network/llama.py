"""The Llama causal language model over a packed batch and the paged KV cache.

`LlamaForCausalLM.forward(input_ids (T,), batch, kv) -> hidden (T, H)` runs embedding, the
decoder layers (model/network/layers.py) and the final norm for all new tokens of all sequences at once;
`compute_logits` applies the output head to the rows the sampler needs. `attention_probs` gives
one head's attention matrix for the UI's heat map. Weights arrive through `load_weights` from
the readers (model/loader*.py); this module does not read files, schedule, or sample.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from llm_playground.kernels.dispatch import rms_norm
from llm_playground.kernels.mask import DENSE, MaskSpec
from llm_playground.model.network.batch import AttentionBatch
from llm_playground.model.network.config import ModelConfig
from llm_playground.model.network.cpu_decode import decode_layer, plan_decode
from llm_playground.model.network.kv_cache import KVCache
from llm_playground.model.network.layers import LlamaDecoderLayer
from llm_playground.model.network.linear import Linear
from llm_playground.model.network.rope import rope_tables
from llm_playground.model.network.weight_contract import ModelLoadError, expected_shapes

ROPE_EAGER_POSITIONS = 8192   # RoPE rows built with the model (the default model's context: 2 MB)


class LlamaForCausalLM(nn.Module):
    """The Llama causal LM: embeddings, decoder layers, final norm, LM head and RoPE tables."""
    def __init__(self, config: ModelConfig, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config
        self.dtype = dtype
        self.device = torch.device(device)
        H, V = config.hidden_size, config.vocab_size
        self.embed_tokens = nn.Parameter(torch.empty(V, H, dtype=dtype, device=device),
                                         requires_grad=False)                 # (V, H)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, dtype, device)
                                    for _ in range(config.num_layers))
        self.norm = nn.Parameter(torch.empty(H, dtype=dtype, device=device), requires_grad=False)
        head = self.embed_tokens if config.tie_word_embeddings else torch.empty(V, H, dtype=dtype,
                                                                                  device=device)
        self.lm_head = Linear(head)                                            # (V, H)
        # RoPE rows for the first positions only: a file's claimed context (2^31 - 1 tokens
        # in a crafted one) must not size an allocation. ensure_positions grows the tables to
        # what is used (the engine's runner asks for its longest possible sequence at start-up).
        cos, sin = rope_tables(config.head_dim, config.rope_theta,
                               min(config.max_position, ROPE_EAGER_POSITIONS), config.rope_scaling,
                               device)
        self.register_buffer("rope_cos", cos, persistent=False)               # (P, D/2) f32
        self.register_buffer("rope_sin", sin, persistent=False)

    def ensure_positions(self, n: int) -> None:
        """Make the RoPE tables cover positions 0..n-1 (at most the model's context). Grows only;
        call it before capturing CUDA graphs, which keep the tables' addresses."""
        n = min(int(n), self.config.max_position)
        if n > self.rope_cos.shape[0]:
            cfg = self.config
            self.rope_cos, self.rope_sin = rope_tables(cfg.head_dim, cfg.rope_theta, n,
                                                       cfg.rope_scaling, self.device)

    # ---- weights -------------------------------------------------------------------------
    @torch.no_grad()
    def load_weights(self, get: Callable[[str], torch.Tensor]) -> None:
        """Fill every parameter from `get(hf_name) -> tensor` (any float dtype, any device)."""
        cfg = self.config
        want = expected_shapes(cfg)

        def fetch(name: str) -> torch.Tensor:
            """Tensor `name` from `get`, shape checked, in the model's device and dtype."""
            t = get(name)
            if not (t.is_floating_point() and t.dtype.itemsize >= 2):
                raise ModelLoadError(f"tensor {name} has dtype {str(t.dtype).replace('torch.', '')}; "
                                     f"weights must be floating point (16 bits or more)")
            if tuple(t.shape) != want[name]:
                raise ModelLoadError(f"tensor {name} has shape {tuple(t.shape)}, expected {want[name]}")
            return t.to(device=self.device, dtype=self.dtype)

        self.embed_tokens.copy_(fetch("model.embed_tokens.weight"))
        self.norm.copy_(fetch("model.norm.weight"))
        if not cfg.tie_word_embeddings:
            self.lm_head.weight.copy_(fetch("lm_head.weight"))
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            layer.input_norm.copy_(fetch(p + "input_layernorm.weight"))
            layer.post_attention_norm.copy_(fetch(p + "post_attention_layernorm.weight"))
            layer.qkv_proj.weight.copy_(torch.cat([fetch(p + f"self_attn.{n}_proj.weight")
                                                   for n in ("q", "k", "v")]))
            layer.o_proj.weight.copy_(fetch(p + "self_attn.o_proj.weight"))
            layer.gate_up_proj.weight.copy_(torch.cat([fetch(p + "mlp.gate_proj.weight"),
                                                       fetch(p + "mlp.up_proj.weight")]))
            layer.down_proj.weight.copy_(fetch(p + "mlp.down_proj.weight"))

    def quantize_projections(self, pack: Callable[[list[str], torch.Tensor], "PackedWeight"],
                             progress: Callable[[int, int], None] | None = None) -> None:
        """Replace q|k|v, o, gate|up, down of every layer and the output head by
        QuantLinear(pack(parts, weight)) (model/network/quant_linear.py): `parts` are the HF
        names fused into the projection (the head of tied embeddings: the embedding table's),
        `weight` the float (out, in) matrix it holds now. The embedding table stays float.
        `progress(done, total)` after each matrix: weight elements quantised so far, of all."""
        from llm_playground.model.network.quant_linear import QuantLinear
        cfg = self.config
        head_parts = ["model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"]
        jobs = []   # (owner, attribute, parts)
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            jobs += [(layer, "qkv_proj", [p + f"self_attn.{n}_proj.weight" for n in "qkv"]),
                     (layer, "o_proj", [p + "self_attn.o_proj.weight"]),
                     (layer, "gate_up_proj", [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"]),
                     (layer, "down_proj", [p + "mlp.down_proj.weight"])]
        jobs.append((self, "lm_head", head_parts))
        total = sum(getattr(o, a).weight.numel() for o, a, _ in jobs)
        done = 0
        for owner, attr, parts in jobs:
            weight = getattr(owner, attr).weight                              # (out, in) float
            done += weight.numel()
            setattr(owner, attr, QuantLinear(pack(parts, weight), self.dtype, self.device))
            if progress is not None:
                progress(done, total)

    def quantize_int8(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Weight-only int8, one scale per output row, for every projection and the head."""
        from llm_playground.kernels.quant_layout import quantize_int8
        self.quantize_projections(lambda parts, w: quantize_int8(w, None), progress)

    # ---- forward -------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, batch: AttentionBatch, kv: KVCache) -> torch.Tensor:
        """input_ids (T,) int64 -> final-normed hidden states (T, H); writes K/V of all T tokens."""
        hidden = F.embedding(input_ids, self.embed_tokens)                     # (T, H)
        residual = None
        plan = plan_decode(batch, self.rope_cos, self.rope_sin, kv.block_size, self.device,
                           kv.quantised)   # CPU decodes: model/network/cpu_decode.py
        for i, layer in enumerate(self.layers):
            if plan is not None:
                hidden, residual = decode_layer(layer, hidden, residual, kv.k[i], kv.v[i], plan)
                continue
            hidden, residual = layer(hidden, residual, batch, kv.k[i], kv.v[i],
                                     self.rope_cos, self.rope_sin, kv.scales(i))
        hidden, _ = rms_norm(hidden, self.norm, self.config.rms_norm_eps, residual)
        return hidden                                                          # (T, H)

    @torch.inference_mode()
    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (N, H) -> logits (N, V) float32."""
        return self.lm_head(hidden).float()

    # ---- inspection (UI) ------------------------------------------------------------------
    @torch.inference_mode()
    def attention_probs(self, input_ids: torch.Tensor | list[int], layer: int, head: int,
                        mask: MaskSpec = DENSE, block_size: int = 16) -> torch.Tensor:
        """Softmax attention (T, T) float32 of query head `head` in layer `layer` over a prompt.

        Runs the prompt through a private paged cache (layers 0..layer-1 fully, then the q/k of
        `layer`), so it never touches the engine's cache. Rows are queries, columns keys.
        """
        cfg = self.config
        if not 0 <= layer < cfg.num_layers:
            raise ValueError(f"layer must be in 0..{cfg.num_layers - 1}, got {layer}")
        if not 0 <= head < cfg.num_heads:
            raise ValueError(f"head must be in 0..{cfg.num_heads - 1}, got {head}")
        ids = torch.as_tensor(input_ids, dtype=torch.long, device=self.device)   # (T,)
        T = int(ids.shape[0])
        if T == 0:
            raise ValueError("attention_probs needs at least one token")
        if T > cfg.max_position:
            raise ValueError(f"attention_probs: {T} tokens exceed the model's context of {cfg.max_position}")
        self.ensure_positions(T)
        n_blocks = -(-T // block_size)
        kv = KVCache(max(layer, 1), n_blocks, block_size, cfg.num_kv_heads, cfg.head_dim,
                     self.dtype, self.device)
        batch = AttentionBatch(
            positions=torch.arange(T, device=self.device),
            slot_mapping=torch.arange(T, device=self.device),
            cu_seqlens_q=torch.tensor([0, T], dtype=torch.int32, device=self.device),
            context_lens=torch.tensor([T], dtype=torch.int32, device=self.device),
            block_tables=torch.arange(n_blocks, dtype=torch.int32, device=self.device)[None],
            max_q_len=T, max_context_len=T, mask=mask, num_decodes=0)
        hidden = F.embedding(ids, self.embed_tokens)                          # (T, H)
        residual = None
        for i in range(layer):
            hidden, residual = self.layers[i](hidden, residual, batch, kv.k[i], kv.v[i],
                                              self.rope_cos, self.rope_sin)
        target = self.layers[layer]
        if residual is None:
            x = rms_norm(hidden, target.input_norm, cfg.rms_norm_eps)
        else:
            x, _ = rms_norm(hidden, target.input_norm, cfg.rms_norm_eps, residual)
        q, k, _ = target.attention_qkv(x, batch.positions, self.rope_cos, self.rope_sin)
        kv_head = head // (cfg.num_heads // cfg.num_kv_heads)
        scores = (q[:, head].float() @ k[:, kv_head].float().T) * target.scale   # (T, T)
        pos = torch.arange(T, device=self.device)
        allowed = mask.allowed(pos[:, None], pos[None, :])                    # (T, T) bool
        return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
