"""Triton KV write, fused residual + RMSNorm, SwiGLU, RoPE and RoPE + KV write against their
torch references.

CPU: under TRITON_INTERPRET=1 on small odd shapes. GPU (@pytest.mark.gpu): Llama-3-8B-like shapes.
Outputs are poisoned (NaN) or pre-filled with random values, so unwritten elements fail.
"""
from __future__ import annotations

import pytest
import torch

from kernel_cases import TOL, needs_interpreter, rel_err
from llm_playground.kernels import reference as ref


def check_write_kv(T, hkv, d, nb, bs, dtype, device):
    from llm_playground.kernels.kv_write import write_kv
    g = torch.Generator().manual_seed(1)
    k = torch.randn(T, hkv, d, generator=g).to(dtype).to(device)
    v = torch.randn(T, hkv, d, generator=g).to(dtype).to(device)
    slots = torch.randperm(nb * bs, generator=g)[:T].to(torch.int64)
    slots[::3] = -1                                                   # every third token skipped
    slots = slots.to(device)
    kc = torch.randn(nb, bs, hkv, d, generator=g).to(dtype).to(device)
    vc = torch.randn(nb, bs, hkv, d, generator=g).to(dtype).to(device)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    write_kv(k, v, kc, vc, slots)
    ref.write_kv_ref(k, v, kc_ref, vc_ref, slots)
    assert torch.equal(kc, kc_ref) and torch.equal(vc, vc_ref)


def check_rms_norm(T, H, dtype, device, with_residual):
    from llm_playground.kernels.rmsnorm import rms_norm
    g = torch.Generator().manual_seed(2)
    x = torch.randn(T, H, generator=g).to(dtype).to(device)
    w = (1 + 0.1 * torch.randn(H, generator=g)).to(dtype).to(device)
    r = torch.randn(T, H, generator=g).to(dtype).to(device) if with_residual else None
    got = rms_norm(x, w, 1e-5, r)
    want = ref.rms_norm_ref(x.double(), w.double(), 1e-5, None if r is None else r.double())
    if with_residual:
        assert rel_err(got[0], want[0]) < TOL[dtype]
        assert rel_err(got[1], want[1]) < TOL[dtype]
    else:
        assert rel_err(got, want) < TOL[dtype]


def check_silu_and_mul(T, inter, dtype, device):
    from llm_playground.kernels.swiglu import silu_and_mul
    g = torch.Generator().manual_seed(3)
    gu = torch.randn(T, 2 * inter, generator=g).to(dtype).to(device)
    got = silu_and_mul(gu)
    assert got.shape == (T, inter)
    assert rel_err(got, ref.silu_and_mul_ref(gu.double())) < TOL[dtype]


def check_rope(T, hq, hkv, d, dtype, device):
    from llm_playground.kernels.rope_triton import rope
    g = torch.Generator().manual_seed(4)
    q = torch.randn(T, hq, d, generator=g).to(dtype).to(device)
    k = torch.randn(T, hkv, d, generator=g).to(dtype).to(device)
    pos = torch.randint(0, 500, (T,), generator=g).to(device)
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2).double() / d))
    ang = torch.arange(512).double()[:, None] * inv[None, :]          # (512, D/2)
    cos, sin = ang.cos().float().to(device), ang.sin().float().to(device)
    gq, gk = rope(q, k, pos, cos, sin)
    wq, wk = ref.rope_ref(q.double(), k.double(), pos, cos.double(), sin.double())
    assert rel_err(gq, wq) < TOL[dtype] and rel_err(gk, wk) < TOL[dtype]


def check_rope_write_kv(T, hq, hkv, d, nb, bs, dtype, device):
    """The fused RoPE + KV write against rope_ref then write_kv_ref: the rotated q, and the cache
    (rotated k, v) at every slot; untouched slots keep their random values."""
    from llm_playground.kernels.rope_triton import rope_write_kv
    g = torch.Generator().manual_seed(5)
    q = torch.randn(T, hq, d, generator=g).to(dtype).to(device)
    k = torch.randn(T, hkv, d, generator=g).to(dtype).to(device)
    v = torch.randn(T, hkv, d, generator=g).to(dtype).to(device)
    pos = torch.randint(0, 500, (T,), generator=g).to(device)
    slots = torch.randperm(nb * bs, generator=g)[:T].to(torch.int64)
    slots[1::4] = -1
    slots = slots.to(device)
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2).double() / d))
    ang = torch.arange(512).double()[:, None] * inv[None, :]          # (512, D/2)
    cos, sin = ang.cos().float().to(device), ang.sin().float().to(device)
    kc = torch.randn(nb, bs, hkv, d, generator=g).to(dtype).to(device)
    vc = torch.randn(nb, bs, hkv, d, generator=g).to(dtype).to(device)
    kc_ref, vc_ref = kc.double(), vc.double()
    got_q = rope_write_kv(q, k, v, pos, cos, sin, kc, vc, slots)
    want_q = ref.rope_write_kv_ref(q.double(), k.double(), v.double(), pos, cos.double(),
                                   sin.double(), kc_ref, vc_ref, slots)
    assert rel_err(got_q, want_q) < TOL[dtype]
    written = slots[slots >= 0]                  # compare the written slots alone, not diluted
    flat = lambda c: c.reshape(-1, hkv, d)[written]  # noqa: E731
    assert rel_err(flat(kc), flat(kc_ref)) < TOL[dtype]
    assert torch.equal(vc.double(), vc_ref)      # v is copied, never rounded differently
    unwritten = torch.ones(nb * bs, dtype=torch.bool, device=slots.device)
    unwritten[written] = False
    assert torch.equal(kc.reshape(-1, hkv, d)[unwritten].double(),
                       kc_ref.reshape(-1, hkv, d)[unwritten])   # other slots untouched
    # return_k: the same q and cache writes, plus the rotated k packed (all T rows, slot or not)
    kc2, vc2 = torch.zeros_like(kc), torch.zeros_like(vc)
    got_q2, got_k = rope_write_kv(q, k, v, pos, cos, sin, kc2, vc2, slots, return_k=True)
    _, want_k = ref.rope_write_kv_ref(q.double(), k.double(), v.double(), pos, cos.double(),
                                      sin.double(), torch.zeros_like(kc_ref),
                                      torch.zeros_like(vc_ref), slots, return_k=True)
    assert torch.equal(got_q2, got_q) and torch.equal(kc2.reshape(-1, hkv, d)[written],
                                                      kc.reshape(-1, hkv, d)[written])
    assert got_k.shape == (T, hkv, d) and rel_err(got_k, want_k) < TOL[dtype]


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fused_ops_interpreted(dtype):
    check_rope_write_kv(T=11, hq=9, hkv=3, d=64, nb=6, bs=4, dtype=dtype, device="cpu")
    check_rope_write_kv(T=3, hq=8, hkv=1, d=128, nb=2, bs=16, dtype=dtype, device="cpu")
    check_write_kv(T=13, hkv=3, d=64, nb=7, bs=4, dtype=dtype, device="cpu")
    check_rms_norm(T=5, H=100, dtype=dtype, device="cpu", with_residual=False)
    check_rms_norm(T=5, H=576, dtype=dtype, device="cpu", with_residual=True)
    check_silu_and_mul(T=3, inter=1536 // 4 + 1, dtype=dtype, device="cpu")
    check_rope(T=7, hq=9, hkv=3, d=64, dtype=dtype, device="cpu")
    check_rope(T=2, hq=8, hkv=1, d=128, dtype=dtype, device="cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fused_ops_gpu(dtype):
    check_write_kv(T=1000, hkv=8, d=128, nb=300, bs=16, dtype=dtype, device="cuda")
    check_rms_norm(T=777, H=4096, dtype=dtype, device="cuda", with_residual=True)
    check_rms_norm(T=64, H=576, dtype=dtype, device="cuda", with_residual=False)
    check_silu_and_mul(T=333, inter=14336, dtype=dtype, device="cuda")
    check_rope(T=999, hq=32, hkv=8, d=128, dtype=dtype, device="cuda")
    check_rope_write_kv(T=999, hq=32, hkv=8, d=128, nb=300, bs=16, dtype=dtype, device="cuda")
    check_rope_write_kv(T=5, hq=9, hkv=3, d=64, nb=4, bs=16, dtype=dtype, device="cuda")
