"""Llama-architecture hyper-parameters, read from GGUF metadata or a Hugging Face config.json.

Only the dataclass and its validation live here; the readers are in model/weights/gguf_file.py and
model/weights/hf_folder.py.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


@dataclass
class ModelConfig:
    """A Llama model's shape and constants: sizes, heads, RoPE, norm epsilon, special token ids."""
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position: int                  # context length the model was trained for
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    # Llama-3 style frequency scaling: {"factor", "low_freq_factor", "high_freq_factor",
    # "original_max_position_embeddings"}; None = plain RoPE.
    rope_scaling: dict | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    architecture: str = "llama"

    def __post_init__(self) -> None:
        if self.architecture != "llama":
            raise ValueError(f"unsupported architecture {self.architecture!r}: only 'llama' is implemented")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "max_position"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"model config: {name} must be an integer, got {value!r}")
            setattr(self, name, int(value))
            if getattr(self, name) <= 0:
                raise ValueError(f"model config: {name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"model config: num_heads ({self.num_heads}) is not a multiple of "
                             f"num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"model config: head_dim must be even for RoPE, got {self.head_dim}")
        if not (math.isfinite(self.rope_theta) and self.rope_theta > 0):   # NaN fails too
            raise ValueError(f"model config: rope_theta must be a finite positive number, got {self.rope_theta}")
        if not (math.isfinite(self.rms_norm_eps) and self.rms_norm_eps >= 0):
            raise ValueError(f"model config: rms_norm_eps must be a finite number >= 0, got {self.rms_norm_eps}")
        self.eos_token_ids = tuple(self.eos_token_ids)
