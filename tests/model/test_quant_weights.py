"""Quantised weights run as stored: GGUF blocks repacked exactly, the CPU backends of QuantLinear
against the float oracle, --weights / --dtype resolution, and a tiny model's logits with
quantised weights against the same weights dequantised to float32.

Oracles: `gguf.quants.dequantize` (the gguf package, llama.cpp's reference code in numpy) for the
repacking, which must agree bit for bit; kernels/quant_layout.quant_linear_ref (float64 on the
dequantised weight) for each backend; a float32 model filled with the dequantised weights for the
whole model (the quantised model computes in bfloat16, so it is held to bf16-sized errors).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import gguf
from gguf import GGMLQuantizationType as QT

from llm_playground.kernels.quant_layout import quant_linear_ref, quantize_int4, quantize_int8
from llm_playground.model.network.linear import int8_supported
from llm_playground.model.network.quant_linear import QuantLinear
from llm_playground.model.network.weight_contract import ModelLoadError
from llm_playground.model.weights import gguf_repack
from llm_playground.model.weights.loader import load_model, resolve_weights
from paged_helpers import Pager
from tiny_models import random_hf_model, write_gguf

CPU = torch.device("cpu")


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_repack_is_exact_against_gguf_dequantize(kind):
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((13, 160)) * rng.uniform(0.01, 3, (13, 1))).astype(np.float32)
    raw = gguf.quants.quantize(w, QT[kind])                                # (13, bytes)
    want = gguf.quants.dequantize(raw, QT[kind])                           # (13, 160) float32
    pw = gguf_repack.repack(raw, kind, 160)
    assert pw.group_size == 32 and pw.source == kind
    assert np.array_equal(pw.dequantize().numpy(), want)


def test_repack_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="cannot repack Q4_K"):
        gguf_repack.repack(np.zeros((1, 144), np.uint8), "Q4_K", 256)
    with pytest.raises(ValueError, match="whole blocks"):
        gguf_repack.repack(np.zeros((1, 18), np.uint8), "Q4_0", 40)


def _cases():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(40, 96, generator=g) / 10                 # N not a multiple of 16 (pads rows)
    w2 = torch.randn(32, 100, generator=g) / 10               # K not a multiple of the group
    return [("int4pack", quantize_int4(w, 32)), ("int4pack", quantize_int4(w, 32, symmetric=True)),
            ("int4pack", quantize_int4(w2, 64)), ("float", quantize_int4(w, 48)),
            ("int8pack", quantize_int8(w, None)), ("int8pack", quantize_int8(w2, 32))]


@pytest.mark.skipif(not int8_supported(), reason="this torch has no CPU int8 matmul")
@pytest.mark.parametrize("i", range(6))
@pytest.mark.parametrize("T", [1, 7])
def test_quant_linear_cpu_backends_match_the_oracle(i, T):
    backend, pw = _cases()[i]
    layer = QuantLinear(pw, torch.bfloat16, CPU)
    assert layer.backend == backend
    x = torch.randn(T, pw.in_features, generator=torch.Generator().manual_seed(i)).bfloat16()
    y = layer(x)
    assert y.shape == (T, pw.out_features) and y.dtype == torch.bfloat16
    if pw.group_size < pw.in_features and pw.bits == 8:   # grouped int8: requantised per channel
        assert "requantised" in layer.note
        want = quant_linear_ref(x.double(), quantize_int8(pw.dequantize(), None))
    else:
        want = quant_linear_ref(x.double(), pw)
    err = (y.double() - want).norm() / want.norm()
    assert err < 1.5e-2, f"{backend}: relative error {err:.2e}"   # bf16 scales + bf16 output


def test_resolve_weights_rules():
    f32, bf16 = torch.float32, torch.bfloat16
    cuda = torch.device("cuda")
    assert resolve_weights("float32", None, CPU)[:2] == ("float32", f32)       # exact mode stays
    assert resolve_weights(None, None, cuda)[:2] == ("bfloat16", bf16)
    assert resolve_weights(None, "int4", CPU)[:2] == ("int4", bf16)
    assert resolve_weights("float16", "native", cuda)[:2] == ("native", torch.float16)
    assert resolve_weights("float32", "float", CPU)[:2] == ("float32", f32)
    fmt, act, notes = resolve_weights("int8", None, CPU)                       # the old spelling
    if int8_supported():
        assert (fmt, act) == ("int8", bf16) and "--weights int8" in notes[0]
        assert resolve_weights(None, None, CPU)[:2] == ("int8", bf16)
    with pytest.raises(ModelLoadError, match="contradicts"):
        resolve_weights("int8", "int4", CPU)
    with pytest.raises(ModelLoadError, match="unknown weights"):
        resolve_weights(None, "int3", CPU)


def tiny_quant_gguf(tmp_path, quant, tied=True):
    hf = random_hf_model(5, vocab_size=260, hidden_size=64, intermediate_size=96,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.mul_(0.3)                                 # keep activations in a sane range
    path = tmp_path / "q.gguf"
    write_gguf(hf, path, quant=quant, tokenizer=True)
    return path


def logits_of(loaded, ids):
    pager = Pager(loaded.config, num_blocks=16, block_size=4, dtype=loaded.dtype, seed=2)
    hidden = loaded.model.forward(torch.tensor(ids), pager.batch([(0, len(ids))]), pager.kv)
    return loaded.model.compute_logits(hidden)                                 # (T, V) float32


@pytest.mark.skipif(not int8_supported(), reason="this torch has no CPU int8 matmul")
@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_native_gguf_logits_near_the_dequantised_float32_model(tmp_path, kind):
    """--weights native keeps the file's blocks (Q8_0 requantised per channel on the CPU) and
    gives logits near the same file dequantised to float32 (--dtype float32)."""
    path = tiny_quant_gguf(tmp_path, QT[kind])
    exact = load_model(path, dtype="float32", device="cpu")
    native = load_model(path, weights="native", device="cpu")
    assert native.weight_format == "native" and native.dtype == torch.bfloat16
    want = "int8 per-channel (from Q8_0 g32)" if kind == "Q8_0" else f"{kind} g32"
    assert native.weights.startswith(want), native.weights
    ids = list(range(3, 60, 3))
    a, b = logits_of(exact, ids), logits_of(native, ids)
    scale = a.abs().max().item()
    err = (b - a).abs()
    assert err.max().item() < 0.05 * scale and err.mean().item() < 0.01 * scale, \
        f"max {err.max().item():.4f} mean {err.mean().item():.4f} of scale {scale:.2f}"
    assert (b.argmax(-1) == a.argmax(-1)).float().mean().item() >= 0.9


@pytest.mark.skipif(not int8_supported(), reason="this torch has no CPU int8 matmul")
@pytest.mark.parametrize("weights,group", [("int8", None), ("int4", None), ("int4", 32),
                                           ("int8", 32)])
def test_float_file_quantised_at_load(tmp_path, weights, group):
    """A float file quantised at load (--weights int8|int4, --group-size) against the same
    weights dequantised into a float32 model (the packed weight's own values)."""
    path = tiny_quant_gguf(tmp_path, None, tied=False)
    q = load_model(path, weights=weights, group_size=group, device="cpu")
    ref = load_model(path, dtype="float32", device="cpu")
    with torch.no_grad():                        # the float32 model of the quantised values
        for mine, theirs in zip(q.model.modules(), ref.model.modules()):
            if isinstance(mine, QuantLinear):
                theirs.weight.copy_(mine.packed.dequantize())
    a, b = logits_of(ref, list(range(2, 50, 2))), logits_of(q, list(range(2, 50, 2)))
    scale = a.abs().max().item()
    assert (b - a).abs().max().item() < 0.05 * scale
    assert q.weights.startswith(weights)


def test_group_size_is_checked(tmp_path):
    path = tiny_quant_gguf(tmp_path, None)
    with pytest.raises(ModelLoadError, match="multiple of 16"):
        load_model(path, weights="int4", group_size=40, device="cpu")
    with pytest.raises(ModelLoadError, match="applies to --weights int8 or int4"):
        load_model(path, weights="float", group_size=32, device="cpu")


INTERPRET_SCRIPT = r"""
import sys
from pathlib import Path
import torch
from llm_playground.kernels import dispatch
from llm_playground.model.weights.loader import load_model
from paged_helpers import Pager
path = Path(sys.argv[1])
exact = load_model(path, dtype="float32", device="cpu")             # dequantised, reference ops
dispatch.set_backend("triton")
quant = load_model(path, dtype="float32", weights="native", device="cpu")
assert {m.backend for m in quant.model.modules() if hasattr(m, "backend")} == {"triton"}
worst = 0.0
pagers = [Pager(m.config, num_blocks=24, block_size=4, seed=1) for m in (exact, quant)]
ids = list(range(5, 40, 3))
for n in [len(ids), 1, 1]:                                           # prefill (GEMM), decodes (GEMV)
    out = []
    for loaded, pager, backend in ((exact, pagers[0], "reference"), (quant, pagers[1], "triton")):
        dispatch.set_backend(backend)
        out.append(loaded.model.compute_logits(loaded.model.forward(
            torch.tensor(ids[-n:]), pager.batch([(0, n)]), pager.kv)))
    worst = max(worst, ((out[1] - out[0]).abs().max() / out[0].abs().max()).item())
    ids.append(int(out[0][-1].argmax()))
print("WORST", worst)
"""


def test_native_weights_through_the_triton_kernels_interpreted(tmp_path):
    """The CUDA path (QuantLinear -> kernels/quant_matmul.py) under TRITON_INTERPRET=1 on a Q4_1
    file with float32 compute: the same logits as the dequantised float32 model to float32
    rounding (prefill through the GEMM, decodes through the GEMV). Runs in a subprocess so the
    interpreter variable is set before triton is imported."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    pytest.importorskip("triton")
    path = tiny_quant_gguf(tmp_path, QT.Q4_1)
    here = Path(__file__).parent
    env = dict(os.environ, TRITON_INTERPRET="1", KERNELS_BACKEND="reference",
               PYTHONPATH=os.pathsep.join([str(here), str(here.parents[1])]))
    run = subprocess.run([sys.executable, "-c", INTERPRET_SCRIPT, str(path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    worst = float(run.stdout.split("WORST")[1])
    assert 0 < worst < 1e-4, worst      # 0 would mean the two paths were one
