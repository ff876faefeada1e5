"""A linear projection over a plain float weight, and the check for torch's CPU int8 matmul.

`Linear(weight)` computes x @ weight.T. Quantised weights (int8, int4, GGUF blocks) are a
different module, model/network/quant_linear.QuantLinear, which replaces a Linear after the float
weights are loaded (LlamaForCausalLM.quantize_projections). Nothing here reads files.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    """A bias-free linear layer over a fixed float weight."""
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)   # (out, in)

    @property
    def out_features(self) -> int:
        """Output width (weight rows)."""
        return int(self.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # (T, in) -> (T, out)
        """x (T, in) -> (T, out)."""
        return F.linear(x, self.weight)


def int8_supported() -> bool:
    """True when torch has the CPU weight-only int8 matmul this module uses."""
    try:
        x = torch.zeros(1, 32, dtype=torch.bfloat16)
        torch.ops.aten._weight_int8pack_mm(x, torch.zeros(8, 32, dtype=torch.int8),
                                           torch.ones(8, dtype=torch.bfloat16))
        return True
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
