"""Tensor parallelism over NCCL (2 GPUs): float32 greedy ids and prompt logits equal one GPU's.

The same checks as test_tensor_parallel.py on the CPU, with every rank on its own GPU (cuda:r)
and the step's collectives on NCCL (the plans still go over a gloo group). Overlap scheduling on
(the CUDA default), so the followers' deferred input ids come from their own identical draws.
Skipped without two CUDA devices. Not run in this session (no multi-GPU machine was lent).
"""
from __future__ import annotations

import pytest
import torch

from llm_playground.model.engine.sampling_params import SamplingParams
from llm_playground.model.parallel.tp_engine import start_tensor_parallel
from llm_playground.model.parallel.tp_runner import private_logits

from tp_helpers import check_greedy, engine_config, prompts, run_batch, tiny_source

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")]


@pytest.mark.parametrize("heads,kv", [(4, 2), (4, 1), (6, 3)], ids=["divides", "replicated", "groups"])
def test_nccl_tp2_equals_one_gpu(heads, kv):
    source = tiny_source(heads, kv)
    cfg = engine_config(device="cuda", overlap=True)
    ref_loaded, _ = source.load("cuda:0")
    from llm_playground.model.engine.engine import Engine
    ref = Engine(ref_loaded, engine_config(device="cuda", overlap=True, cuda_graphs=False))
    ps = prompts(4)
    params = SamplingParams(max_tokens=10, temperature=0.0)
    want, _ = run_batch(ref, ps, params)
    tp = start_tensor_parallel(source, 2, cfg)
    try:
        got, reports = run_batch(tp, ps, params)
        for i, p in enumerate(ps):
            note = check_greedy(ref_loaded, p, want[i], got[i])
            if note:
                print("reported:", note)
        full = private_logits(ref_loaded.model, ps[0]).cpu()
        rel = float((tp.prompt_logits(ps[0]).cpu() - full).abs().max() / full.abs().max())
        assert rel < 1e-4, rel
        assert any(r.parallel and r.parallel.comm_s > 0 for r in reports)
    finally:
        tp.close()
