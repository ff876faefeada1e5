"""GPU: the model through the Triton kernels (CUDA) against transformers on CPU, float32 and bf16.

Same tiny random models and scattered paged cache as the CPU oracle tests. float32: within 5e-3
of the logits' scale (Triton's float32 dot products may use TF32). bfloat16: these tiny models
have large random weights (N(0, 0.3)), so bf16 rounding alone moves the logits a lot; the bound
is calibrated by the oracle itself: transformers run in bf16 on the same GPU gives an error e
against its float32 run, and ours may be at most 2e (or 5% of the scale, whichever is larger).
"""
from __future__ import annotations

import copy

import pytest
import torch

from model import loader_hf
from model.loader import build_model
from paged_helpers import Pager
from tiny_models import random_hf_model

import transformers  # noqa: F401  (test oracle: installed by make test)
pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-3), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("heads", [(4, 4), (8, 2), (4, 1)])
def test_gpu_prefill_and_decode_match_transformers(tmp_path, dtype, tol, heads):
    hf = random_hf_model(5, num_attention_heads=heads[0], num_key_value_heads=heads[1],
                         hidden_size=128, intermediate_size=192)
    hf.save_pretrained(tmp_path)
    cfg = loader_hf.read_hf_config(tmp_path)
    _, get = loader_hf.open_hf_weights(tmp_path, cfg)
    fmt = "float32" if dtype == torch.float32 else "bfloat16"
    ours = build_model(cfg, get, fmt, dtype, torch.device("cuda"))
    hf_low = None
    if dtype != torch.float32:   # the oracle at the same precision, for the error bound
        hf_low = copy.deepcopy(hf).to(device="cuda", dtype=dtype)
    pager = Pager(cfg, num_blocks=40, block_size=4, dtype=dtype, seed=1, device="cuda")
    ids = list(range(7, 50, 2))

    @torch.no_grad()
    def oracle(ids):
        ref = hf(torch.tensor([ids])).logits[0]                              # (n, V) float32
        if hf_low is None:
            return ref, 0.0
        low = hf_low(torch.tensor([ids], device="cuda")).logits[0].float().cpu()
        return ref, (low - ref).abs().max(-1).values                         # (n,) per row

    logits = ours.compute_logits(ours.forward(torch.tensor(ids, device="cuda"),
                                              pager.batch([(0, len(ids))]), pager.kv)).float().cpu()
    ref, hf_err = oracle(ids)
    scale = ref.abs().max().item()
    bound = torch.clamp(2 * torch.as_tensor(hf_err), min=tol * scale)       # (n,) or scalar
    err = (logits - ref).abs().max(-1).values                                # (n,)
    assert (err < bound).all(), f"errors {err.tolist()} bounds {bound.tolist()}"
    for _ in range(8):
        nxt = int(ref[-1].argmax())
        ids.append(nxt)
        logits = ours.compute_logits(ours.forward(torch.tensor([nxt], device="cuda"),
                                                  pager.batch([(0, 1)]), pager.kv)).float().cpu()
        ref, hf_err = oracle(ids)
        bound = max(2 * float(torch.as_tensor(hf_err).reshape(-1)[-1]), tol * scale)
        err = (logits[0] - ref[-1]).abs().max().item()
        assert err < bound, f"decode error {err:.3g}, bound {bound:.3g}"
