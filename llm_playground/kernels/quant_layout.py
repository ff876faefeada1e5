"""The one packed layout of weight-only quantised matrices, its quantisers and its torch oracle.

Every quantised projection (GGUF Q4_0 / Q4_1 / Q8_0 repacked at load, a float model quantised at
load to int8 or int4) is a `PackedWeight`, read as it is by the Triton kernels
(kernels/quant_matmul.py) and converted once for torch's CPU ops (model/network/quant_linear.py).

Layout, for a weight W of (N, K) = (out_features, in_features), group size G (a multiple of 16),
Kp = K rounded up to a multiple of G (padding columns hold code 0 and are never multiplied by a
real activation: the kernels mask x beyond K):

    bits 4:  codes  (N, Kp / 2) uint8, row-major; byte j of row n holds k = 2j in its low nibble
                    and k = 2j + 1 in its high nibble, codes q in 0..15
             scales (N, Kp / G) float16
             mins   (N, Kp / G) float16: W[n, k] = scales[n, g] * q + mins[n, g]  (Q4_1 style)
                    or None:          W[n, k] = scales[n, g] * (q - 8)          (Q4_0 style)
    bits 8:  codes  (N, Kp) int8, q in -127..127 (Q8_0 allows -128)
             scales (N, Kp / G) float16: W[n, k] = scales[n, g] * q; per-channel is G = Kp
             mins   None

with g = k // G. Scales and mins are float16 because GGUF stores its block scales as float16, so
Q4_0 / Q4_1 / Q8_0 blocks (G = 32) repack without any rounding; quantisers here round the scale
to float16 first and compute the codes against the rounded scale. Rows are independent, so the
fused q|k|v and gate|up projections concatenate PackedWeights along N (`cat`), and a row
permutation (llama.cpp's q/k order) is a row gather (`rows`).

`quant_linear_ref(x, pw)`: the oracle, x (T, K) @ dequantize(pw).T in float32, cast to x's dtype.
What this module does not do: run fast (that is the Triton kernels and the CPU ops), read files
(model/weights/gguf_repack.py) or choose a format (model/weights/loader.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

GROUP_MULTIPLE = 16       # kernels tile K by powers of two >= 16 that divide the group size


@dataclass
class PackedWeight:
    """A weight-only quantised (N, K) matrix in the layout of the module docstring."""
    bits: int                         # 4 or 8
    group_size: int                   # G: columns per scale
    in_features: int                  # K (unpadded)
    codes: torch.Tensor               # bits 4: (N, Kp/2) uint8; bits 8: (N, Kp) int8
    scales: torch.Tensor              # (N, Kp/G) float16
    mins: torch.Tensor | None = None  # (N, Kp/G) float16, bits 4 only; None = symmetric
    source: str = ""                  # what it came from: Q4_1, Q4_0, Q8_0, int8, int4

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"PackedWeight: bits must be 4 or 8, got {self.bits}")
        G = self.group_size
        if G < GROUP_MULTIPLE or G % GROUP_MULTIPLE:
            raise ValueError(f"PackedWeight: group size must be a positive multiple of "
                             f"{GROUP_MULTIPLE}, got {G}")
        kp = self.padded_in_features
        want = (kp // 2) if self.bits == 4 else kp
        dt = torch.uint8 if self.bits == 4 else torch.int8
        if self.codes.dim() != 2 or self.codes.shape[1] != want or self.codes.dtype != dt:
            raise ValueError(f"PackedWeight: codes must be (N, {want}) {dt}, got "
                             f"{tuple(self.codes.shape)} {self.codes.dtype}")
        if tuple(self.scales.shape) != (self.out_features, kp // G):
            raise ValueError(f"PackedWeight: scales must be ({self.out_features}, {kp // G}), "
                             f"got {tuple(self.scales.shape)}")
        if self.mins is not None and (self.bits != 4 or self.mins.shape != self.scales.shape):
            raise ValueError("PackedWeight: mins are for bits 4 only, shaped like scales")

    @property
    def out_features(self) -> int:
        """N: rows of the weight."""
        return int(self.codes.shape[0])

    @property
    def padded_in_features(self) -> int:
        """Kp: K rounded up to a multiple of the group size."""
        return -(-self.in_features // self.group_size) * self.group_size

    @property
    def nbytes(self) -> int:
        """Bytes of codes, scales and mins."""
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scales, self.mins)
                   if t is not None)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight, scales and mins included (4.5 for Q4_0, 5 for Q4_1, ...)."""
        return 8 * self.nbytes / (self.out_features * self.in_features)

    def describe(self) -> str:
        """'Q4_1 g32' / 'int8 per-channel' / 'int4 g128': for headers and messages."""
        name = self.source or f"int{self.bits}"
        return f"{name} per-channel" if self.group_size >= self.in_features else f"{name} g{self.group_size}"

    def _map(self, fn) -> "PackedWeight":
        return PackedWeight(self.bits, self.group_size, self.in_features, fn(self.codes),
                            fn(self.scales), None if self.mins is None else fn(self.mins),
                            self.source)

    def to(self, device: torch.device | str) -> "PackedWeight":
        """The same weight on `device`."""
        return self._map(lambda t: t.to(device))

    def rows(self, index: torch.Tensor) -> "PackedWeight":
        """Rows `index` (a permutation or a slice of the output features)."""
        return self._map(lambda t: t[index].contiguous())

    @staticmethod
    def cat(parts: list["PackedWeight"]) -> "PackedWeight":
        """Concatenate along N; every part must share bits, group size, K and symmetry."""
        first = parts[0]
        for p in parts[1:]:
            if (p.bits, p.group_size, p.in_features, p.mins is None) != (
                    first.bits, first.group_size, first.in_features, first.mins is None):
                raise ValueError(f"PackedWeight.cat: {p.describe()} cannot join {first.describe()}")
        mins = None if first.mins is None else torch.cat([p.mins for p in parts])
        source = first.source if all(p.source == first.source for p in parts) else f"int{first.bits}"
        return PackedWeight(first.bits, first.group_size, first.in_features,
                            torch.cat([p.codes for p in parts]), torch.cat([p.scales for p in parts]),
                            mins, source)

    def unpacked_codes(self) -> torch.Tensor:
        """(N, Kp) int32 codes: 0..15 for bits 4, -128..127 for bits 8."""
        if self.bits == 8:
            return self.codes.to(torch.int32)
        lo = (self.codes & 0xF).to(torch.int32)
        hi = (self.codes >> 4).to(torch.int32)
        return torch.stack([lo, hi], dim=-1).reshape(self.out_features, -1)   # (N, Kp)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, K) weight in `dtype`, computed in float32 (exact for GGUF's blocks)."""
        q = self.unpacked_codes().float()                                     # (N, Kp)
        s = self.scales.float().repeat_interleave(self.group_size, dim=1)     # (N, Kp)
        if self.mins is not None:
            w = s * q + self.mins.float().repeat_interleave(self.group_size, dim=1)
        elif self.bits == 4:
            w = s * (q - 8)
        else:
            w = s * q
        return w[:, :self.in_features].to(dtype)


def quant_linear_ref(x: torch.Tensor, pw: PackedWeight) -> torch.Tensor:
    """The oracle: x (T, K) @ dequantize(pw).T in float32 (float64 for float64 x), in x's dtype."""
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    return (x.to(work) @ pw.dequantize(work).T.to(x.device)).to(x.dtype)        # (T, N)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(N, Kp) integer codes 0..15, Kp even -> (N, Kp/2) uint8 (k = 2j low nibble, 2j+1 high)."""
    q = q.to(torch.uint8)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def _grouped(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int]:
    """(N, K) float -> (N, Kp/G, G) float32, zero-padded to Kp columns; and Kp."""
    N, K = w.shape
    kp = -(-K // group_size) * group_size
    wf = torch.zeros(N, kp, dtype=torch.float32, device=w.device)
    wf[:, :K] = w.float()
    return wf.view(N, kp // group_size, group_size), kp


def per_channel_group(in_features: int) -> int:
    """The group size meaning 'one scale per output row': K rounded up to a multiple of 16."""
    return -(-in_features // GROUP_MULTIPLE) * GROUP_MULTIPLE


def quantize_int8(w: torch.Tensor, group_size: int | None = None) -> PackedWeight:
    """Symmetric int8 (absmax / 127 per group; None = per output row) of a float (N, K)."""
    N, K = w.shape
    G = per_channel_group(K) if group_size is None else group_size
    wg, kp = _grouped(w, G)                                                   # (N, Kp/G, G)
    scales = (wg.abs().amax(-1) / 127.0).clamp(min=1e-8).to(torch.float16)   # (N, Kp/G)
    q = torch.round(wg / scales.float()[..., None]).clamp(-127, 127).to(torch.int8)
    return PackedWeight(8, G, K, q.view(N, kp), scales, None, "int8")


def quantize_int4(w: torch.Tensor, group_size: int = 128, symmetric: bool = False) -> PackedWeight:
    """4-bit codes per group of a float (N, K): min/scale (Q4_1 style, default) or symmetric,
    scale = (value of largest magnitude) / -8 and codes q - 8 (Q4_0 style; the scale may be
    negative, as in Q4_0)."""
    N, K = w.shape
    wg, kp = _grouped(w, group_size)                                          # (N, Kp/G, G)
    if symmetric:
        # Q4_0's choice: the value of largest magnitude maps to code 0 exactly (d = max / -8);
        # the other side reaches +7 (an equal and opposite value clamps at 15: one step off)
        big = wg.gather(-1, wg.abs().argmax(-1, keepdim=True))[..., 0]       # (N, Kp/G) signed
        d = big / -8.0
        d = torch.where(d.abs() < 1e-8, torch.full_like(d, 1e-8), d)
        scales = d.to(torch.float16)
        q = torch.round(wg / scales.float()[..., None] + 8).clamp(0, 15)
        mins = None
    else:
        lo, hi = wg.amin(-1), wg.amax(-1)
        scales = ((hi - lo) / 15.0).clamp(min=1e-8).to(torch.float16)
        mins = lo.to(torch.float16)
        q = torch.round((wg - mins.float()[..., None]) / scales.float()[..., None]).clamp(0, 15)
    return PackedWeight(4, group_size, K, pack_nibbles(q.view(N, kp)), scales, mins, "int4")
