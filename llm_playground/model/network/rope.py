"""Rotary position embedding tables: cos/sin per position, with Llama-3 frequency scaling.

Computes the (max_pos, D/2) float32 tables that `kernels.rope` reads, the way transformers
computes them (same float32 operations, so the float32 path matches it to the last bit where
possible). It does not rotate anything: the rotation is `kernels.rope` (rotate-half layout).
"""
from __future__ import annotations

import math

import torch

LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def inverse_frequencies(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """(D/2,) float32 inverse frequencies; Llama-3 smoothing when `scaling` is given."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if not scaling:
        return inv_freq
    missing = [k for k in LLAMA3_KEYS if k not in scaling]
    if missing:
        raise ValueError(f"rope scaling needs {', '.join(missing)} (only Llama-3 scaling is implemented)")
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)  # long waves: / factor
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def rope_tables(head_dim: int, theta: float, max_pos: int, scaling: dict | None = None,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: (max_pos, D/2) float32 for positions 0..max_pos-1."""
    inv_freq = inverse_frequencies(head_dim, theta, scaling)              # (D/2,)
    freqs = torch.arange(max_pos, dtype=torch.int64).float()[:, None] * inv_freq[None, :]  # (P, D/2)
    return freqs.cos().to(device), freqs.sin().to(device)
