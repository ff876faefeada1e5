"""Turn a loaded full model into one tensor-parallel rank's shard, in place.

`shard_model(model, share, group, timer)` slices the already-loaded (and, for quantised files,
already dequantised) float weights of a `LlamaForCausalLM` (model/network/llama.py) by the
rank's `RankShare` (tp_plan.py):
  qkv_proj      (q|k|v rows)   column-parallel: the rows of this rank's query and KV heads
  o_proj        (H, Hq D)      row-parallel: the columns of its query heads, then all-reduce
  gate_up_proj  (gate|up rows) column-parallel: its slice of the MLP width, gate and up
  down_proj     (H, I)         row-parallel: the same slice's columns, then all-reduce
  lm_head       (V, H)         vocabulary-parallel: its padded rows, then all_gather
  embed_tokens, norms          replicated (every rank embeds the whole batch)
Each decoder layer's head counts (num_heads, num_kv_heads, q_size, kv_size) and the model's
`config` become the rank's, so the ModelRunner sizes this rank's KV pool by its own KV heads
(same blocks, same block table, fewer heads) without knowing about parallelism. The network
code is not changed beyond one condition in layers.py (see tp_layers.py). Int8 and int4
weights are quantised after slicing (`quantize_shard`, the single-rank loader's packing rule
per shard); `--weights native` (a GGUF's own blocks) cannot be sliced: `check_weights` refuses it. It does not start processes or move tensors between
devices: the model must already sit on the rank's device.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from llm_playground.model.network.linear import Linear
from llm_playground.model.parallel.tp_layers import CommTimer, RowParallel, VocabParallelHead
from llm_playground.model.parallel.tp_plan import RankShare


def _rows(heads: tuple[int, ...], D: int, offset: int = 0) -> list[int]:
    """Row (or column) indices of the given heads of width D, from `offset`."""
    return [offset + h * D + d for h in heads for d in range(D)]


def _set(proj: nn.Module, weight: torch.Tensor) -> None:
    """Give a Linear its shard (contiguous, so kernels see a plain row-major weight)."""
    proj.weight = nn.Parameter(weight.contiguous(), requires_grad=False)


@torch.no_grad()
def shard_model(model, share: RankShare, group, timer: CommTimer):
    """Slice `model` (full float weights) to `share` in place and wrap its communicating
    projections; returns the model. Its `config` becomes the rank's local shape."""
    cfg = model.config
    D, Hq, Hkv, I = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size
    dev = model.embed_tokens.device
    q_idx = torch.tensor(_rows(share.q_heads, D), device=dev)
    kv_rows = (_rows(share.q_heads, D) + _rows(share.kv_heads, D, Hq * D)
               + _rows(share.kv_heads, D, (Hq + Hkv) * D))
    qkv_idx = torch.tensor(kv_rows, device=dev)
    s, e = share.ffn
    gu_idx = torch.tensor(list(range(s, e)) + list(range(I + s, I + e)), device=dev)
    for layer in model.layers:
        _set(layer.qkv_proj, layer.qkv_proj.weight.index_select(0, qkv_idx))
        o = Linear(layer.o_proj.weight.index_select(1, q_idx).contiguous())
        layer.o_proj = RowParallel(o, group, timer)
        _set(layer.gate_up_proj, layer.gate_up_proj.weight.index_select(0, gu_idx))
        layer.down_proj = RowParallel(Linear(layer.down_proj.weight[:, s:e].contiguous()),
                                      group, timer)
        layer.num_heads, layer.num_kv_heads = len(share.q_heads), len(share.kv_heads)
        layer.q_size, layer.kv_size = layer.num_heads * D, layer.num_kv_heads * D
    head = model.lm_head.weight                                               # (V, H)
    vs, ve = share.vocab
    rows = head[vs:min(ve, cfg.vocab_size)]
    if rows.shape[0] < ve - vs:                                               # pad the last slice
        pad = torch.zeros(ve - vs - rows.shape[0], head.shape[1], dtype=head.dtype, device=dev)
        rows = torch.cat([rows, pad])
    model.lm_head = VocabParallelHead(Linear(rows.clone().contiguous()), cfg.vocab_size,
                                      share.world, group, timer)
    model.full_config = cfg
    model.config = dataclasses.replace(cfg, num_heads=len(share.q_heads),
                                       num_kv_heads=len(share.kv_heads),
                                       intermediate_size=e - s)
    model.tp_share = share
    return model


QUANTISED = ("int8", "int4")        # weight formats a shard is quantised to after slicing


def check_weights(weight_format: str) -> None:
    """ValueError (one line) for a weight format the shards cannot hold."""
    if weight_format == "native":
        raise ValueError("--weights native is not supported with --tensor-parallel: a GGUF's own "
                         "blocks cannot be sliced per rank; use --weights int8, int4 or float")


def quantize_shard(model, act_dtype: torch.dtype, weight_format: str = "int8",
                   group_size: int | None = None) -> None:
    """Weight-only int8 or int4 for every projection of a sharded model and its head shard, as
    the single-rank loader packs them (loader.make_packer: int8 per row or per `group_size`;
    int4 per `group_size` or loader.int4_group of the shard's width, the head int8 per row).
    The embedding table stays as it is: it is a separate tensor from the head shard."""
    from llm_playground.kernels.quant_layout import quantize_int4, quantize_int8
    from llm_playground.model.parallel.tp_layers import quantized
    from llm_playground.model.weights.loader import int4_group
    if weight_format not in QUANTISED:
        raise ValueError(f"quantize_shard: weight format {weight_format!r} is not one of {QUANTISED}")

    def pack(w: torch.Tensor):                                 # (out, in) float
        if weight_format == "int8":
            return quantize_int8(w, group_size)
        return quantize_int4(w, group_size or int4_group(w.shape[1]))

    def head(w: torch.Tensor):
        return quantize_int8(w, group_size if weight_format == "int8" else None)

    for layer in model.layers:
        for name in ("qkv_proj", "gate_up_proj"):             # column shards: plain Linears
            setattr(layer, name, quantized(getattr(layer, name), act_dtype, pack))
        for proj in (layer.o_proj, layer.down_proj):           # row shards: RowParallel
            proj.quantize(act_dtype, pack)
    model.lm_head.quantize(act_dtype, head)
