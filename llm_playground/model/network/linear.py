"""A linear projection whose weight is either a plain tensor or weight-only int8.

`Linear(weight)` computes x @ weight.T. `quantize_int8()` replaces the weight by int8 rows with
one scale per output row (symmetric, absmax / 127) and runs through torch's CPU kernel
`aten._weight_int8pack_mm` (activations stay bfloat16): about three times faster than a
bfloat16 matmul at batch 1 on AVX-512 CPUs. It is lossy and therefore never used by the exact
float32 mode. Nothing here reads files or knows about GGUF block quantization.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    """A bias-free linear layer over a fixed weight, optionally int8 with per-row scales."""
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)   # (out, in), or int8 (out, in)
        self.scales: torch.Tensor | None = None                   # (out,) when int8

    @property
    def out_features(self) -> int:
        """Output width (weight rows)."""
        return int(self.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # (T, in) -> (T, out)
        """x (T, in) -> (T, out); the int8 matmul when quantized."""
        if self.scales is None:
            return F.linear(x, self.weight)
        return torch.ops.aten._weight_int8pack_mm(x, self.weight, self.scales)

    @torch.no_grad()
    def quantize_int8(self, act_dtype: torch.dtype = torch.bfloat16) -> None:
        """Symmetric per-output-row int8; the scales take the activations' dtype (the op wants it)."""
        w = self.weight.float()                                          # (out, in)
        scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0            # (out,)
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.weight = nn.Parameter(q, requires_grad=False)
        self.scales = scales.to(act_dtype)


def int8_supported() -> bool:
    """True when torch has the CPU weight-only int8 matmul this module uses."""
    try:
        x = torch.zeros(1, 32, dtype=torch.bfloat16)
        torch.ops.aten._weight_int8pack_mm(x, torch.zeros(8, 32, dtype=torch.int8),
                                           torch.ones(8, dtype=torch.bfloat16))
        return True
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
