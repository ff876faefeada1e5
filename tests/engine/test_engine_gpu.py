"""The engine on CUDA (Triton kernels through kernels.dispatch): a batch of prompts of different
lengths, with chunked prefill, prefix hits and a fork, gives the greedy tokens of the same engine
on CPU (torch reference path), float32."""
from __future__ import annotations

import pytest
import torch

from llm_playground.model.engine.engine import Engine
from llm_playground.model.engine.config import EngineConfig
from llm_playground.model.engine.sampling_params import SamplingParams
from engine_helpers import prompts, run_all, tiny_loaded

OVER = dict(hidden_size=128, num_heads=4, num_kv_heads=2, head_dim=32, intermediate_size=256)


def tokens(device: str, budget: int, cuda_graphs: bool = False) -> dict:
    loaded = tiny_loaded(0, device=device, **OVER)
    e = Engine(loaded, EngineConfig(num_blocks=96, block_size=16, max_num_batched_tokens=budget,
                                    cuda_graphs=cuda_graphs, max_num_seqs=16))
    ps = prompts(5, 10, 120, seed=4)
    ps.append(ps[0][:40] + ps[1])                  # shares 2 full blocks with prompt 0
    for p in ps:
        e.add_request(p, SamplingParams(max_tokens=24, ignore_eos=True))
    e.add_request(ps[2], SamplingParams(max_tokens=24, ignore_eos=True, n=2))
    got, reports = run_all(e)
    return got


@pytest.mark.gpu
def test_cuda_engine_matches_cpu_engine():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu = tokens("cpu", 64)
    gpu = tokens("cuda", 64)
    assert gpu == cpu
    assert tokens("cuda", 64, cuda_graphs=True) == cpu
