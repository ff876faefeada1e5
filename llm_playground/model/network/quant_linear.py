"""A weight-only quantised projection that runs as stored: Triton on CUDA, torch's int ops on CPU.

`QuantLinear(packed, act_dtype, device)` computes x @ W.T for a PackedWeight W
(kernels/quant_layout.py). Which arithmetic runs is fixed at construction (`backend`):

- "triton"   CUDA: kernels/quant_matmul.py reads the packed codes, scales and mins as they are.
- "int4pack" CPU, 4-bit, group 32/64/128/256: `aten._weight_int4pack_mm_for_cpu`, the weight
             converted once by `_convert_weight_to_int4pack_for_cpu` (rows padded to a multiple
             of 16), scales and zeros as (K/G, N, 2) in bfloat16 (torch's convention
             w = (q - 8) * scale + zero, so zero = min + 8 * scale for Q4_1, 0 for Q4_0).
             Activations run in bfloat16 (the op's float32 path is ~25x slower here).
- "int8pack" CPU, 8-bit per channel: `aten._weight_int8pack_mm` (one scale per row, in the
             activations' dtype; rows padded to a multiple of 16 columns, as the op needs). Grouped int8 (Q8_0, G = 32) has no CPU op: it is requantised
             per channel from its dequantised values (lossy: `note` says so).
- "float"    anything else on CPU (a 4-bit group the op lacks): dequantised once, F.linear.

Chosen by measurement (CPU of this machine, 2 threads, batch 1, shared with other jobs so
+-20%, 2026-12-07; us per call, SmolLM2-135M shapes q|k|v 960x576 / gate|up 3072x576 /
down 576x1536 / head 49152x576): float32 F.linear 21 / 124 / 32 / 3538, bfloat16 F.linear
53 / 125 / 73 / 2055, int8pack 19 / 52 / 27 / 945, int4pack g32 19 / 50 / 29 / 770, int4pack
with float32 activations 505 / 1508 / 839 / 24931. So int8 and int4 both use the torch ops; the
model's own CPU decode time is mostly elsewhere (attention reference, Python).
What it does not do: quantise activations or read files; `weight` is the code tensor only so
that the fused-linear check (kernels.fused_linear_ok: plain weights of x's dtype) says no.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llm_playground.kernels.quant_layout import PackedWeight, quantize_int8

INT4PACK_GROUPS = (32, 64, 128, 256)


class QuantLinear(nn.Module):
    """A bias-free linear layer over a weight-only quantised PackedWeight (module docstring)."""
    def __init__(self, packed: PackedWeight, act_dtype: torch.dtype,
                 device: torch.device | str) -> None:
        super().__init__()
        device = torch.device(device)
        self.act_dtype = act_dtype
        self.in_features, self._out = packed.in_features, packed.out_features
        self.note = ""
        self.stored = packed.describe()          # what the file / quantiser gave
        from llm_playground.kernels.dispatch import get_backend
        if device.type == "cuda" or get_backend() == "triton":   # triton on CPU: the interpreter
            self.backend = "triton"
            self.packed = packed.to(device)
        elif packed.bits == 4 and packed.group_size in INT4PACK_GROUPS:
            self.backend = "int4pack"
            self._init_int4pack(packed)
        elif packed.bits == 8:
            self.backend = "int8pack"
            if packed.group_size < packed.in_features:
                self.note = f"{packed.describe()} requantised per channel (no grouped int8 op on CPU)"
                self.stored = f"int8 per-channel (from {packed.describe()})"
                packed = quantize_int8(packed.dequantize(), None)
            # (N, Kp) int8, Kp a multiple of 16: the op reads garbage (and has crashed) for
            # other widths (torch 2.13, K = 100 or 120); activations are padded to match
            self._codes = packed.codes.contiguous()
            self._scales = packed.scales[:, 0].to(act_dtype).contiguous()     # (N,)
            self._kp = packed.padded_in_features
        else:
            self.backend = "float"
            self.note = f"{packed.describe()} dequantised on CPU (no int4 op for group {packed.group_size})"
            self._w = packed.dequantize(act_dtype)                            # (N, K)
        if self.backend != "triton":
            self.packed = packed
        self.weight = self._weight_tensor()

    def _init_int4pack(self, pw: PackedWeight) -> None:
        N, kp, G = pw.out_features, pw.padded_in_features, pw.group_size
        n16 = -(-N // 16) * 16
        codes = torch.zeros(n16, kp, dtype=torch.int32)
        codes[:N] = pw.unpacked_codes()
        scale = pw.scales.float()                                             # (N, Kp/G)
        zero = (pw.mins.float() + 8 * scale if pw.mins is not None        # s*q + m =
                else torch.zeros_like(scale))                             # s*(q - 8) + (m + 8 s)
        # The op takes bfloat16 scales: rounding one shifts every weight of its group by
        # (q - 8) * (s_bf16 - s), which the group's dot product adds up coherently. The zero
        # absorbs that shift's mean over the group's own codes, so each group's weights keep
        # their mean; what is left averages out (tests/model/test_quant_weights.py).
        scale_b = scale.to(torch.bfloat16).float()
        centred = (codes[:N].float() - 8).view(N, -1, G).mean(-1)                  # (N, Kp/G)
        scales = torch.zeros(n16, kp // G, dtype=torch.float32)
        scales[:N] = scale_b
        zeros = torch.zeros_like(scales)
        zeros[:N] = zero - centred * (scale_b - scale)
        self._int4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)   # (N16, Kp/2)
        self._sz = torch.stack([scales, zeros], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
        self._kp = kp

    def _weight_tensor(self) -> torch.Tensor:
        if self.backend == "int4pack":
            return self._int4
        if self.backend == "int8pack":
            return self._codes
        if self.backend == "float":
            return self._w
        return self.packed.codes

    @property
    def out_features(self) -> int:
        """Output width (weight rows)."""
        return self._out

    @property
    def nbytes(self) -> int:
        """Bytes the stored weight takes (codes, scales, mins)."""
        return self.packed.nbytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # (T, in) -> (T, out)
        """x (T, in) -> (T, out) in x's dtype."""
        if self.backend == "triton":
            from llm_playground.kernels.dispatch import quant_linear
            return quant_linear(x, self.packed)
        # (dtype and width checks in Python: a no-op .to() or slice still costs a dispatch,
        # about 1 us, and at batch 1 on the CPU a layer is mostly such per-op costs)
        if self.backend == "int8pack":
            if self._kp != self.in_features:
                x = F.pad(x, (0, self._kp - self.in_features))
            scales = self._scales if self._scales.dtype == x.dtype else self._scales.to(x.dtype)
            return torch.ops.aten._weight_int8pack_mm(x, self._codes, scales)
        if self.backend == "float":
            return F.linear(x, self._w if self._w.dtype == x.dtype else self._w.to(x.dtype))
        xb = x if x.dtype == torch.bfloat16 else x.to(torch.bfloat16)
        if self._kp != self.in_features:
            xb = F.pad(xb, (0, self._kp - self.in_features))
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(xb, self._int4, self.packed.group_size,
                                                       self._sz)     # (T, N16)
        if y.shape[1] != self._out:
            y = y[:, :self._out]
        return y if y.dtype == x.dtype else y.to(x.dtype)
