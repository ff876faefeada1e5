"""GGUF Q4_0 / Q4_1 / Q8_0 blocks repacked, without rounding, into the kernels' PackedWeight.

A GGUF quantised tensor of (rows, K) is rows x K/32 blocks of 32 weights (ggml-quants.c):

    Q4_0  18 bytes: d (float16), 16 bytes of nibbles        w = d * (q - 8)
    Q4_1  20 bytes: d, m (float16), 16 bytes of nibbles     w = d * q + m
    Q8_0  34 bytes: d (float16), 32 int8                    w = d * q

where byte j of a 4-bit block holds weight j in its low nibble and weight j + 16 in its high
nibble. `repack(data, type_name, K)` turns the raw uint8 rows into a PackedWeight of group 32
(kernels/quant_layout.py: nibbles re-paired as (2j, 2j + 1), d -> scales, m -> mins), and
`dequantize()` of the result equals `gguf.quants.dequantize` bit for bit (the same float32
operations on the same float16 values; tests/model/test_quant_weights.py checks it).
K-quants (Q4_K, Q6_K, ...: 256-weight super-blocks with 6-bit sub-block scales) are not
repacked: their two-level scales would need a second kernel layout; they load dequantised.
`packed_getter(reader, cfg)` gives, per Hugging Face tensor name, the file's tensor repacked (q/k
rows unpermuted as the float path does) or None when its type has no kernel. It reads no
file itself (the reader is gguf_file.open_gguf's).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from llm_playground.kernels.quant_layout import PackedWeight, pack_nibbles

BLOCK = 32
BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}
REPACKABLE = tuple(BLOCK_BYTES)


def repack(data: np.ndarray, type_name: str, in_features: int) -> PackedWeight:
    """Raw GGUF rows (rows, K/32 * block bytes) uint8 of type Q4_0 / Q4_1 / Q8_0 -> PackedWeight."""
    if type_name not in BLOCK_BYTES:
        raise ValueError(f"cannot repack {type_name} (only {', '.join(REPACKABLE)})")
    if in_features % BLOCK:
        raise ValueError(f"{type_name} rows of {in_features} weights are not whole blocks of {BLOCK}")
    nb, size = in_features // BLOCK, BLOCK_BYTES[type_name]
    raw = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, nb, size)   # (N, nb, bytes)
    rows = raw.shape[0]
    d = torch.from_numpy(raw[..., 0:2].copy().view(np.float16)[..., 0])      # (N, nb) float16
    if type_name == "Q8_0":
        q = torch.from_numpy(raw[..., 2:].copy().view(np.int8))               # (N, nb, 32)
        return PackedWeight(8, BLOCK, in_features, q.reshape(rows, in_features).contiguous(),
                            d.contiguous(), None, "Q8_0")
    if type_name == "Q4_1":
        mins = torch.from_numpy(raw[..., 2:4].copy().view(np.float16)[..., 0]).contiguous()
        nibbles = torch.from_numpy(raw[..., 4:].copy())                       # (N, nb, 16)
    else:
        mins = None
        nibbles = torch.from_numpy(raw[..., 2:].copy())
    codes = torch.cat([nibbles & 0xF, nibbles >> 4], dim=-1)                  # (N, nb, 32) in order
    return PackedWeight(4, BLOCK, in_features, pack_nibbles(codes.reshape(rows, in_features)),
                        d.contiguous(), mins, type_name)


def packed_getter(reader, cfg) -> Callable[[str], PackedWeight | None]:
    """get(HF name) -> the GGUF tensor as a PackedWeight, or None when its type is not in
    REPACKABLE (F32, K-quants, ...): the caller then quantises the float weight itself."""
    from llm_playground.model.weights.gguf_file import hf_name, unpermute_rows
    tensors = {hf_name(t.name): t for t in reader.tensors if hf_name(t.name) is not None}

    def get(name: str) -> PackedWeight | None:
        t = tensors[name]
        kind = t.tensor_type.name
        if kind not in REPACKABLE:
            return None
        in_features = int(t.shape[0])                        # GGUF lists ne0 (K) first
        pw = repack(t.data, kind, in_features)               # (N, ...) rows as stored
        heads = (cfg.num_heads if name.endswith("q_proj.weight") else
                 cfg.num_kv_heads if name.endswith("k_proj.weight") else None)
        if heads is not None:                                # llama.cpp's q/k row order
            order = unpermute_rows(np.arange(pw.out_features), heads)
            pw = pw.rows(torch.from_numpy(np.ascontiguousarray(order)))
        return pw

    return get
