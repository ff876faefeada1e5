"""GPU: the model through the Triton kernels (CUDA) against transformers on CPU, float32 and bf16.

Same tiny random models and scattered paged cache as the CPU oracle tests; the tolerances are
relative to the logits' scale because Triton's float32 dot products may use TF32.
"""
from __future__ import annotations

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
    pager = Pager(cfg, num_blocks=40, block_size=4, dtype=dtype, seed=1, device="cuda")
    ids = list(range(7, 50, 2))
    logits = ours.compute_logits(ours.forward(torch.tensor(ids, device="cuda"),
                                              pager.batch([(0, len(ids))]), pager.kv)).cpu()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    scale = ref.abs().max().item()
    assert (logits - ref).abs().max().item() < tol * scale
    for _ in range(8):
        nxt = int(ref[-1].argmax())
        ids.append(nxt)
        logits = ours.compute_logits(ours.forward(torch.tensor([nxt], device="cuda"),
                                                  pager.batch([(0, 1)]), pager.kv)).cpu()
        with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits[0]
        assert (logits[0] - ref[-1]).abs().max().item() < tol * scale
