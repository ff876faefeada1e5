"""Fused RMSNorm + projection and SwiGLU + projection (kernels/fused_linear.py) against the
unfused torch references (kernels/reference.py), and the model layer's use of them.

CPU: under TRITON_INTERPRET=1 on small odd shapes (features and outputs not multiples of any
tile, 1 to 16 rows). GPU (@pytest.mark.gpu): SmolLM2-135M and Llama-3-8B projection shapes.
The oracle runs in float64 on the same inputs. On the GPU the new residual must equal the
same-dtype add bit for bit (it is one rounded add); triton's interpreter converts float32 to
bfloat16 by truncation, so there it is held to the bf16 tolerance instead.
"""
from __future__ import annotations

import pytest
import torch

from kernel_cases import TOL, needs_interpreter, rel_err
from llm_playground.kernels import reference as ref


def check_rms_norm_linear(T, H, N, dtype, device, with_residual, seed=0):
    from llm_playground.kernels.fused_linear import rms_norm_linear
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).to(dtype).to(device)
    nw = (1 + 0.1 * torch.randn(H, generator=g)).to(dtype).to(device)
    w = (torch.randn(N, H, generator=g) / H ** 0.5).to(dtype).to(device)
    r = torch.randn(T, H, generator=g).to(dtype).to(device) if with_residual else None
    y, res = rms_norm_linear(x, nw, 1e-5, r, w)
    assert y.shape == (T, N) and res.shape == (T, H) and y.dtype == dtype
    want_y, want_res = ref.rms_norm_linear_ref(
        x.double(), nw.double(), 1e-5, None if r is None else r.double(), w.double())
    assert rel_err(y, want_y) < TOL[dtype]
    same_dtype_res = x if r is None else x + r
    if device == "cuda" or dtype == torch.float32:
        assert torch.equal(res, same_dtype_res)
    else:
        assert rel_err(res, same_dtype_res.double()) < TOL[dtype]


def check_silu_mul_linear(T, inter, N, dtype, device, seed=0):
    from llm_playground.kernels.fused_linear import silu_mul_linear
    g = torch.Generator().manual_seed(seed)
    gu = torch.randn(T, 2 * inter, generator=g).to(dtype).to(device)
    w = (torch.randn(N, inter, generator=g) / inter ** 0.5).to(dtype).to(device)
    y = silu_mul_linear(gu, w)
    assert y.shape == (T, N) and y.dtype == dtype
    assert rel_err(y, ref.silu_mul_linear_ref(gu.double(), w.double())) < TOL[dtype]


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("T", [1, 5, 16])
def test_fused_linear_interpreted(dtype, T):
    check_rms_norm_linear(T, H=100, N=37, dtype=dtype, device="cpu", with_residual=True)
    check_rms_norm_linear(T, H=72, N=50, dtype=dtype, device="cpu", with_residual=False)
    check_silu_mul_linear(T, inter=90, N=41, dtype=dtype, device="cpu")
    check_silu_mul_linear(T, inter=1030, N=9, dtype=dtype, device="cpu")   # BLOCK_N 4, K tail


@needs_interpreter
def test_fused_linear_rejects_what_it_cannot_do():
    from llm_playground.kernels.fused_linear import MAX_ROWS, rms_norm_linear, silu_mul_linear
    x = torch.randn(MAX_ROWS + 1, 32)
    with pytest.raises(ValueError, match="T <= 16"):
        rms_norm_linear(x, torch.ones(32), 1e-5, None, torch.randn(8, 32))
    with pytest.raises(ValueError, match="at most 2048 input features"):
        rms_norm_linear(x[:2].repeat(1, 65), torch.ones(2080), 1e-5, None, torch.randn(8, 2080))
    with pytest.raises(ValueError, match="weight must be"):
        rms_norm_linear(x[:2], torch.ones(32), 1e-5, None, torch.randn(8, 31))
    with pytest.raises(ValueError, match="dtype"):
        silu_mul_linear(torch.randn(2, 64), torch.randn(8, 32, dtype=torch.bfloat16))


def test_fused_linear_ok_rules():
    """The dispatch fuses only on the Triton path, for few rows and a plain weight of x's dtype."""
    from llm_playground.kernels import dispatch
    from llm_playground.kernels.fused_linear import MAX_K, MAX_ROWS
    assert (dispatch._FUSED_MAX_ROWS, dispatch._FUSED_MAX_K) == (MAX_ROWS, MAX_K)   # kept in step
    x, w = torch.randn(4, 32), torch.randn(8, 32)
    old = dispatch.get_backend()
    try:
        dispatch.set_backend("triton")
        assert dispatch.fused_linear_ok(x, w)
        assert not dispatch.fused_linear_ok(torch.randn(17, 32), w)            # prefill-sized
        assert not dispatch.fused_linear_ok(x, w.to(torch.int8))               # quantized
        assert not dispatch.fused_linear_ok(torch.randn(4, 4096), torch.randn(8, 4096))  # wide
        dispatch.set_fused_linear(False)
        assert not dispatch.fused_linear_ok(x, w)
        dispatch.set_fused_linear(True)
        dispatch.set_backend("reference")
        assert not dispatch.fused_linear_ok(x, w)
    finally:
        dispatch.set_backend(old)
        dispatch.set_fused_linear(True)


@needs_interpreter
def test_layer_fused_decode_matches_unfused():
    """A decoder layer at decode size (3 rows) gives the same output and residual with the fused
    kernels as with the norm, SwiGLU and projections run apart (both through Triton)."""
    from llm_playground.kernels import dispatch
    from llm_playground.model.network.batch import AttentionBatch
    from llm_playground.model.network.config import ModelConfig
    from llm_playground.model.network.layers import LlamaDecoderLayer
    cfg = ModelConfig(vocab_size=64, hidden_size=96, intermediate_size=80, num_layers=1,
                      num_heads=4, num_kv_heads=2, head_dim=24, max_position=64)
    torch.manual_seed(0)
    layer = LlamaDecoderLayer(cfg, torch.float32, "cpu")
    for p in layer.parameters():
        p.data.normal_(0, 0.1)
    layer.input_norm.data.add_(1.0)
    layer.post_attention_norm.data.add_(1.0)
    inv = 1.0 / (10000 ** (torch.arange(0, 24, 2).double() / 24))
    ang = torch.arange(64).double()[:, None] * inv[None, :]
    cos, sin = ang.cos().float(), ang.sin().float()
    B, bs = 3, 4
    ctx = [5, 9, 2]
    table = torch.tensor([[0, 1, -1], [2, 3, 4], [5, -1, -1]], dtype=torch.int32)
    kc = torch.randn(6, bs, 2, 24)
    vc = torch.randn(6, bs, 2, 24)
    pos = torch.tensor([c - 1 for c in ctx])
    slots = torch.tensor([int(table[b, p // bs]) * bs + p % bs for b, p in enumerate(pos)])
    batch = AttentionBatch(positions=pos, slot_mapping=slots,
                           cu_seqlens_q=torch.arange(B + 1, dtype=torch.int32),
                           context_lens=torch.tensor(ctx, dtype=torch.int32), block_tables=table,
                           max_q_len=1, max_context_len=max(ctx), num_decodes=B)
    hidden, residual = torch.randn(B, 96), torch.randn(B, 96)
    old = dispatch.get_backend()
    outs = []
    try:
        dispatch.set_backend("triton")
        for fused in (True, False):
            dispatch.set_fused_linear(fused)
            outs.append(layer(hidden, residual, batch, kc.clone(), vc.clone(), cos, sin))
    finally:
        dispatch.set_backend(old)
        dispatch.set_fused_linear(True)
    (h1, r1), (h2, r2) = outs     # the residual after attention differs by the qkv dot's order
    assert rel_err(r1, r2) < 1e-4 and rel_err(h1, h2) < 1e-4
    assert rel_err(r1, residual) > 1e-2    # and the layer did change it


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("T", [1, 7, 16])
def test_fused_linear_gpu(dtype, T):
    # SmolLM2-135M: q|k|v 576 -> 960, gate|up 576 -> 3072, down 1536 -> 576
    check_rms_norm_linear(T, H=576, N=960, dtype=dtype, device="cuda", with_residual=True)
    check_rms_norm_linear(T, H=576, N=3072, dtype=dtype, device="cuda", with_residual=False)
    check_silu_mul_linear(T, inter=1536, N=576, dtype=dtype, device="cuda")
    # the widest rows it takes (MAX_K), odd output counts; TinyLlama-1.1B's q|k|v 2048 -> 2560
    check_rms_norm_linear(T, H=2048, N=2560, dtype=dtype, device="cuda", with_residual=True)
    check_rms_norm_linear(T, H=1999, N=333, dtype=dtype, device="cuda", with_residual=True)
    check_silu_mul_linear(T, inter=2048, N=2047, dtype=dtype, device="cuda")
