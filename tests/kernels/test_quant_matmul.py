"""Weight-only quantised matmuls (kernels/quant_matmul.py) against the torch oracle
(kernels/quant_layout.quant_linear_ref), and the layout's quantisers against the float weight.

CPU: under TRITON_INTERPRET=1 on small odd shapes (N, K not multiples of any tile, K not a
multiple of the group, group sizes 16..128 including 48 and 80, which are not powers of two),
1 row (the GEMV) and 2..33 rows (the GEMM), with split-K forced on and off. GPU
(@pytest.mark.gpu): SmolLM2-135M and Llama-3-8B projection shapes, batch 1/16/64, compiled.
The oracle dequantises the same packed weight in float64 and multiplies the same bfloat16
activations, so the only differences are the kernel's float32 sum order and the final rounding
to bfloat16 (one bf16 ulp, relative 2^-8, on each output).
"""
from __future__ import annotations

import pytest
import torch

from kernel_cases import needs_interpreter, rel_err
from llm_playground.kernels.quant_layout import (PackedWeight, quant_linear_ref, quantize_int4,
                                                 quantize_int8)

BF16_TOL = 6e-3        # relative Frobenius error: bf16 output rounding is ~2e-3


def make(kind: str, N: int, K: int, G: int | None, seed: int = 0) -> tuple[torch.Tensor, PackedWeight]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=g) / K ** 0.5
    if kind == "int4_min":
        return w, quantize_int4(w, G)
    if kind == "int4_sym":
        return w, quantize_int4(w, G, symmetric=True)
    return w, quantize_int8(w, G)


def check(pw: PackedWeight, M: int, device: str, dtype=torch.bfloat16, seed: int = 1) -> None:
    from llm_playground.kernels.quant_matmul import quant_linear
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, pw.in_features, generator=g).to(dtype)
    pw_d = pw.to(device)
    y = quant_linear(x.to(device), pw_d)
    assert y.shape == (M, pw.out_features) and y.dtype == dtype
    want = quant_linear_ref(x.double(), pw)
    assert rel_err(y, want) < (BF16_TOL if dtype == torch.bfloat16 else 1e-5)


CASES = [  # kind, N, K, G (None: per channel)
    ("int4_min", 37, 100, 32),      # K padded to 128, Q4_1's group
    ("int4_min", 19, 600, 32),      # 19 groups: one group a GEMV tile, split-K
    ("int4_sym", 41, 150, 48),      # a group that is not a power of two
    ("int4_sym", 9, 160, 16),
    ("int4_min", 33, 250, 128),
    ("int8", 23, 200, 64),
    ("int8", 19, 70, None),         # per channel, K padded to 80
    ("int8", 50, 333, 80),
]


@needs_interpreter
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}-g{c[3]}")
@pytest.mark.parametrize("M", [1, 2, 17, 33])
def test_quant_linear_interpreted(case, M):
    kind, N, K, G = case
    _, pw = make(kind, N, K, G)
    check(pw, M, "cpu")


@needs_interpreter
def test_quant_linear_float32_interpreted():
    """float32 activations: the GEMM's dot in IEEE float32 and the GEMV agree to ~1e-6."""
    for kind in ("int4_min", "int8"):
        _, pw = make(kind, 21, 96, 32)
        for M in (1, 5):
            check(pw, M, "cpu", dtype=torch.float32)


@needs_interpreter
def test_split_k_and_tiles_are_exercised():
    """The cases above reach split-K in both kernels and several groups per GEMV tile."""
    from llm_playground.kernels.quant_matmul import launch_plan
    cpu = torch.device("cpu")
    plans = [launch_plan(M, make(*c)[1], cpu) for c in CASES for M in (1, 17)]
    assert any(p["kernel"] == "gemv" and p["splits"] > 1 for p in plans)
    assert any(p["kernel"] == "gemm" and p["splits"] > 1 for p in plans)
    assert any(p["kernel"] == "gemv" and p["gpt"] > 1 for p in plans)
    assert any(p["splits"] == 1 for p in plans)


def test_quantisers_bound_the_error():
    """Every dequantised weight lies within half a step of the float weight (its group's scale
    / 2, plus float16 rounding of the scale and min; symmetric int4 one step, since a value
    equal and opposite to the group's extreme clamps at code 15); codes stay in range."""
    for kind, N, K, G in CASES:
        w, pw = make(kind, N, K, G)
        err = (pw.dequantize() - w).abs()                                   # (N, K)
        step = pw.scales.float().abs().repeat_interleave(pw.group_size, 1)[:, :K]
        half = 1.0 if kind == "int4_sym" else 0.5
        assert bool((err <= step * half + 1e-3 * w.abs().amax()).all()), kind
        assert float(err.mean()) < 0.3 * float(step.mean()), kind          # mostly well inside
        codes = pw.unpacked_codes()
        lo, hi = (0, 15) if pw.bits == 4 else (-127, 127)
        assert int(codes.min()) >= lo and int(codes.max()) <= hi


def test_layout_rows_and_cat_keep_the_weight():
    _, a = make("int4_min", 10, 64, 32, seed=3)
    _, b = make("int4_min", 6, 64, 32, seed=4)
    both = PackedWeight.cat([a, b])
    assert torch.equal(both.dequantize(), torch.cat([a.dequantize(), b.dequantize()]))
    perm = torch.randperm(16)
    assert torch.equal(both.rows(perm).dequantize(), both.dequantize()[perm])
    _, c = make("int8", 6, 64, 32)
    with pytest.raises(ValueError, match="cannot join"):
        PackedWeight.cat([a, c])


def test_layout_refuses_bad_shapes():
    _, pw = make("int8", 8, 64, 32)
    with pytest.raises(ValueError, match="group size"):
        PackedWeight(8, 24, 64, pw.codes, pw.scales)
    with pytest.raises(ValueError, match="codes must be"):
        PackedWeight(4, 32, 64, pw.codes, pw.scales)


# ---- GPU: real shapes, compiled -------------------------------------------------------------
REAL = [  # (N, K): SmolLM2-135M q|k|v, gate|up, down, head; Llama-3-8B q|k|v, down
    (960, 576), (3072, 576), (576, 1536), (49152, 576), (6144, 4096), (4096, 14336)]


@pytest.mark.gpu
@pytest.mark.parametrize("kind,G", [("int4_min", 32), ("int4_sym", 128), ("int8", None),
                                    ("int8", 32)])
@pytest.mark.parametrize("M", [1, 16, 64])
def test_quant_linear_gpu(kind, G, M):
    for N, K in REAL:
        _, pw = make(kind, N, K, G)
        check(pw, M, "cuda")
